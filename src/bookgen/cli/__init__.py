"""The `bookgen` command. Each command group lives in its own module and is loaded on use."""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute"; loading lazily keeps `bookgen --help` fast and lets a
# command's heavy imports (locust, grafana sdk) stay out of the others.
COMMANDS: dict[str, str] = {
    "serve": "bookgen.cli.serve:serve",
    "api": "bookgen.cli.serve:api",
    "worker": "bookgen.cli.worker:worker",
    "generate": "bookgen.cli.generate:generate",
    "sim-llm": "bookgen.cli.simllm:sim_llm",
    "slo": "bookgen.cli.slo:slo",
    "up": "bookgen.cli.stack:up",
    "status": "bookgen.cli.stack:status",
    "loadtest": "bookgen.cli.loadtest:loadtest",
    "verify": "bookgen.cli.verify:verify",
    "db": "bookgen.cli.db:db",
    "keys": "bookgen.cli.keys:keys",
    "deploy": "bookgen.cli.deploy:deploy",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.version_option(package_name="bookgen")
def main() -> None:
    """BookGen: biographies from an LLM, with the monitoring that proves its targets."""
