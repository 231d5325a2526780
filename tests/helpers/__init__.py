"""Code the tests share, one module per kind of thing:

* ``models``: plain ``nn.Module`` models (``make(name)`` for the explainers, the trained shapes
  model, teachers, hand-built models); ``concept_models``: the exact concept-detector model;
* ``lightning_modules``: LightningModules (``tiny_model``, prototypes, a drifting model);
  ``cli_modules``: a user's own modules for the CLI tests;
* ``data``: tiny datasets, loaders and concept sets; ``training``: Trainer settings and ``fit``;
* ``callbacks``: callbacks that record what a monitor published (under ``ddp_spawn`` a test reads
  their files); ``explainers``: explainers that fail on purpose;
* ``logs``: reading TensorBoard back; ``metrics``: metric-test data and the spawned DDP worker;
* ``patterns``: pattern files for PatternNet; ``tolerance``: tolerances for reordered reductions;
* ``examples``: ``load_example(name)`` imports ``examples/<name>.py``.

Everything a spawned process runs is importable by module path (it is pickled by reference).
"""
