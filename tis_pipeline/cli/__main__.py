"""``python -m tis_pipeline.cli``: the ``tis`` command."""

from tis_pipeline.cli.main import main

main()
