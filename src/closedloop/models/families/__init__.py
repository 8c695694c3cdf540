"""Built-in model families (importing this registers them)."""

from closedloop.models.families import ensemble, lgbm, mlp, resnet, small_cnn  # noqa: F401
