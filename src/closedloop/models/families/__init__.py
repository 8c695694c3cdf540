"""Built-in model families (importing this registers them)."""

from closedloop.models.families import mlp, resnet, small_cnn  # noqa: F401
