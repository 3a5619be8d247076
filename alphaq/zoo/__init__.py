"""The model zoo: the bundled, trained demo MoE model and the code that trains and documents it.

* :mod:`alphaq.zoo.train_demo` trains ``alphaq/data/demo-moe`` (``python -m alphaq.zoo.train_demo``);
* :mod:`alphaq.zoo.tokenizer` trains its byte-level BPE tokenizer;
* :mod:`alphaq.zoo.model_card` measures a checkpoint and writes its ``README.md`` and ``card.json``;
* :mod:`alphaq.zoo.card_markdown` renders ``card.json`` as that ``README.md``.

Load the bundled model with :func:`alphaq.load.model.load_model` (no arguments).
"""
