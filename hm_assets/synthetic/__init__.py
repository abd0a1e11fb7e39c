"""Built-in synthetic H&M data set (the project's embedded default data).

    from hm_assets.synthetic import generate, PRESETS
    generate("/tmp/hm-tiny", preset="tiny", seed=0)

See ``generator.py`` for the model and ``cli.py`` for ``hm-synth``.
"""

from .generator import PRESETS, Preset, default_end_date, generate, resolve_preset
from .timeline import last_tuesday_before
from .transactions import BehaviourParams

__all__ = ["PRESETS", "Preset", "BehaviourParams", "generate", "resolve_preset", "default_end_date",
           "last_tuesday_before"]
