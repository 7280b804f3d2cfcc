__all__ = ["Constraints", "Optimizers", "Loss"]
