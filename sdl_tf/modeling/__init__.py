"""The SDL model: backbones, TResNet, eq. (1) scoring and the SDL loss."""
