"""Built-in plugins, loaded through the same path as entry-point plugins."""

from __future__ import annotations

DEFAULT_PLUGINS: tuple[str, ...] = (
    # methods
    "adapterhub.plugins.lora",
    "adapterhub.plugins.prefix_tuning",
    "adapterhub.plugins.layer_select",
    "adapterhub.plugins.full",
    # evaluators, task packs, base models
    "adapterhub.plugins.evaluators",
    "adapterhub.plugins.tasks",
    "adapterhub.plugins.models",
    # stores and registry commands
    "adapterhub.registry.plugin",
    # commands of the core subsystems
    "adapterhub.cli.core_commands",
    "adapterhub.trainer.cli",
    "adapterhub.evaluation.cli",
    "adapterhub.serving.cli",
    "adapterhub.serving.http.cli",
    "adapterhub.demo",
)

ENTRY_POINT_GROUP = "adapterhub"
