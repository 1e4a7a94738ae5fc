"""Clinical knowledge as data: terminology, guidelines and rules.

Loads a ruleset directory, validates every file against its schema,
checks the rules against the terminology, stratifies them and compiles them
to durable-rules' JSON rule language. It never imports durable itself: the
compiled definitions are plain dicts the engine adapter registers.
"""

from cds.knowledge.ruleset import Ruleset, default_ruleset_path, load_ruleset

__all__ = ["Ruleset", "load_ruleset", "default_ruleset_path"]
