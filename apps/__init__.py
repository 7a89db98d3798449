"""Command-line apps, installed as ``emzoo.apps``: one thin absl module per ``emzoo`` subcommand."""
