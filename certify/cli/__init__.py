"""The commands: argument parsing, model and data loading, results files on disk.

One module per command (``certify``, ``certify-predict``, ``certify-merge``, ``certify-plot``,
``certify-attack``, ``certify-audit``, ``encoders-pretrain``, ``encoders-finetune``), the glue they
share beside them (:mod:`certify.cli.common`: the one-line error convention and argument types;
:mod:`certify.cli.loading`: the flags that choose a model, its data and a run;
:mod:`certify.cli.training`; :mod:`certify.cli.startup`: the console scripts' entry points, which
catch Ctrl-C while a command starts). Nothing in the library imports this package, and importing
it or any command changes no signal handler.
"""
