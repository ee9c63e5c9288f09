"""Explanations of trained models: class activation maps (GradCAM, GradCAM++, CAM) with augmentation smoothing."""
