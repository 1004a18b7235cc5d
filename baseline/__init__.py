"""The supervised baseline: a 2D U-Net from MONAI trained on the same synthetic set as the adapter."""
