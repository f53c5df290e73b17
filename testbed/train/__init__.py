"""Training the testbed's tiny target and drafter models from scratch (CPU), one module per job:

* ``roles.py``: what each role is (:class:`~testbed.train.roles.RoleSpec`, :data:`ROLES`) and the pairs;
* ``data.py``: the encoded-clip cache, the training examples and their collation;
* ``model.py``: the model on the reduced vocabulary and the anchor-weighted loss;
* ``vision.py``: pre-training the vision tower alone;
* ``validate.py``: greedy validation checks (captions and MCQs on held-out clips);
* ``loop.py``: the training loop, its stop rule and what it writes;
* ``cli.py``: the command, ``python -m testbed.train --role ...`` (see its help).
"""
