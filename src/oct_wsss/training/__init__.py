"""Training: dataset adapters, trainers, recipes (``oct-wsss train RECIPE.yaml``) and resumable run state."""

from oct_wsss.training.errors import TrainingCancelled, TrainingError
from oct_wsss.training.recipe import Recipe, train_recipe

__all__ = ["Recipe", "TrainingCancelled", "TrainingError", "train_recipe"]
