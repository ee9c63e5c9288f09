"""The preprocessing proposers and trainers share (intensities, resizing, retina mask, devices), so a checkpoint
sees the same inputs in training and in proposing; ground floor, imported as its modules."""
