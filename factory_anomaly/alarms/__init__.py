"""Alarm episodes per asset: the rule that turns a machine's scored readings into episodes, and the
lifecycle an operator works them through (acknowledge, shelve).

A room of its own because both sides need the same semantics: training calibrates the rule's level on
normal data to a false-episode target per asset-day (`training.episodes`), serving applies it reading by
reading (`app.serving.assets`). numpy and the standard library only, like the artifact contract it reads
from (the manifest's `alarms` section).
"""
