"""The ``roost`` subcommands, one module per family."""

from __future__ import annotations

import click


def all_commands() -> list[click.Command]:
    """Every top-level subcommand of ``roost``."""
    commands: list[click.Command] = []
    from roost.cli.commands import contacts, install, profile, settings, watch

    commands += [
        profile.profile_group,
        contacts.contacts_group,
        settings.param_group,
        settings.value_group,
        watch.watch,
        install.install_user_services,
    ]
    from roost.cli.commands import blog, cache, db, pubsub

    commands += [pubsub.pubsub, cache.cache, blog.blog, db.db_group]
    return commands
