"""The click CLI: thin commands over the library. The only package that imports click.

`preload` holds the entrypoint's commands (run, wait, plan, warm), `cache` the volume's
(ls, status, verify, rm, prune, doctor), `base` what they share, `render` their output.
"""

from __future__ import annotations

import click

from .. import __version__
from ..errors import exit_codes
from . import cache, preload

HELP = """Preload Hugging Face models and datasets into a shared cache, then start the service.

\b
Exit codes:
""" + "\n".join(f"  {code:<8}{meaning}" for code, meaning in exit_codes())


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="preloader")
def cli():
    pass


for command in (preload.run, preload.plan, preload.wait, preload.warm_command, cache.ls_command, cache.status,
                cache.verify, cache.rm_command, cache.prune, cache.doctor):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="preloader")
