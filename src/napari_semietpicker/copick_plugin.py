"""``semietpicker`` train, predict and evaluate as commands of the copick CLI.

copick builds its CLI from entry points: every click command registered in the group
``copick.training.commands`` appears as ``copick training <name>``, and likewise for
``inference`` and ``evaluation`` (pyproject.toml registers the three below). Each command
takes copick's ``-c/--config`` (or ``$COPICK_CONFIG``) and hands everything else to the
matching ``semietpicker`` subcommand, so both CLIs run the same code with the same options:

    copick training semietpicker -c config.json --tomo-type denoised --voxel-spacing 10 \\
        --runs TS_5_4 TS_69_2 --user curation --out model
    copick inference semietpicker -c config.json --tomo-type denoised --voxel-spacing 10 model
    copick evaluation semietpicker -c config.json --truth-user curation

click comes with copick; this module is imported only by copick's CLI.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from . import cli

_FORWARD = {"ignore_unknown_options": True, "allow_extra_args": True}
_CONFIG = click.option("-c", "--config", required=True, envvar="COPICK_CONFIG",
                       show_envvar=True, type=click.Path(exists=True, dir_okay=False),
                       help="copick project configuration (JSON)")


def _rest(metavar: str = "[SEMIETPICKER OPTIONS]...") -> Callable:
    """The arguments handed on to ``semietpicker``, untouched."""
    return click.argument("options", nargs=-1, type=click.UNPROCESSED, metavar=metavar)


def _run(argv: Sequence[str]) -> None:
    """Run ``semietpicker`` with ``argv``; its exit code becomes the command's."""
    code = cli.main(list(argv))
    if code:
        raise SystemExit(code)


@click.command("semietpicker", context_settings=_FORWARD,
               short_help="Train a SemiETPicker model on runs of the project.")
@_CONFIG
@_rest()
def train(config: str, options: tuple[str, ...]) -> None:
    """Train a SemiETPicker model on labelled (and unlabelled) runs of the project.

    Takes the options of ``semietpicker train`` (see ``semietpicker train --help``), at least
    --tomo-type, --voxel-spacing, --runs and --out.
    """
    _run(["train", "--copick", config, *options])


@click.command("semietpicker", context_settings=_FORWARD,
               short_help="Pick particles in runs of the project with a SemiETPicker model.")
@_CONFIG
@_rest("MODEL [SEMIETPICKER OPTIONS]...")
def predict(config: str, options: tuple[str, ...]) -> None:
    """Pick particles in the project's runs (all, or --runs) with the model directory MODEL
    and write them into the project as picks of --user / --session (default semietpicker, 0).

    Takes the options of ``semietpicker predict``, at least --tomo-type and --voxel-spacing;
    --out defaults to the project itself.
    """
    out = [] if "--out" in options else ["--out", config]
    _run(["predict", "--copick", config, *out, *options])


@click.command("semietpicker", context_settings=_FORWARD,
               short_help="Score picks of the project against reference picks (F1, CZII).")
@_CONFIG
@click.option("--pred-user", default="semietpicker", show_default=True,
              help="user id of the predicted picks")
@click.option("--pred-session", default=None, help="session id of the predicted picks")
@click.option("--truth-user", required=True, help="user id of the reference picks")
@click.option("--truth-session", default=None, help="session id of the reference picks")
@_rest()
def evaluate(config: str, pred_user: str, pred_session: str | None, truth_user: str,
             truth_session: str | None, options: tuple[str, ...]) -> None:
    """Score the predicted picks against the reference picks, both read from the project.

    Takes the options of ``semietpicker evaluate`` (--classes, --runs, --json).
    """
    from .io.copick_io import open_project, read_copick_picks
    from .io.picks import write_picks_csv

    with tempfile.TemporaryDirectory(prefix="semietpicker-") as folder:
        files = []
        try:
            root = open_project(config)
            for role, user, session in (("predictions", pred_user, pred_session),
                                        ("truth", truth_user, truth_session)):
                picks = read_copick_picks(root, user_id=user, session_id=session)
                if picks.empty:
                    raise ValueError(f"{config}: no picks of user {user!r}"
                                     + (f", session {session!r}" if session else ""))
                path = Path(folder) / f"{role}.csv"
                write_picks_csv(picks, path)
                files.append(str(path))
        except (ValueError, FileNotFoundError, ImportError) as err:
            raise click.ClickException(str(err)) from err
        _run(["evaluate", *files, *options])
