"""The ``pairstack`` command: ``main.py`` holds the parser and ``main()``, one module per verb
(``run``, ``status``, ``sim``, ``import_files``, ``backtest``), ``options.py`` the ``--config``
option every verb that takes one shares (loaded once, a bad file refused with exit 2).

It lives in actors/ because its verbs start or join Ray; a verb imports its heavy modules inside
its ``main`` so that ``pairstack --help`` stays fast.
"""
