"""Specification of the alias history that rollback walks back down."""

from prefix_registry.registry.aliases import AliasEvent, alias_stack, history_from_tags, new_event, rollback_target


def _history(*moves: tuple[str, str | None, str]) -> list[AliasEvent]:
    events: list[AliasEvent] = []
    for action, from_version, to_version in moves:
        events.append(new_event(events, "champion", action, from_version, to_version, "ann", None))
    return events


def test_rollback_walks_back_through_earlier_champions() -> None:
    history = _history(("promote", None, "1"), ("promote", "1", "2"), ("promote", "2", "3"))
    assert alias_stack(history, "champion") == ["1", "2", "3"]
    assert rollback_target(history, "champion", "3") == "2"
    history += _history(("promote", None, "1"))[:0]
    history.append(new_event(history, "champion", "rollback", "3", "2", "ann", "bad"))
    assert rollback_target(history, "champion", "2") == "1"


def test_no_target_with_a_single_champion_or_none() -> None:
    assert rollback_target([], "champion", None) is None
    assert rollback_target(_history(("promote", None, "1")), "champion", "1") is None


def test_alias_moved_outside_the_tool_counts_as_a_promotion() -> None:
    history = _history(("promote", None, "1"))
    assert rollback_target(history, "champion", "4") == "1"


def test_other_aliases_do_not_mix_into_the_champion_stack() -> None:
    history = _history(("promote", None, "1"))
    history.append(new_event(history, "challenger", "promote", None, "2", "ann", None))
    assert alias_stack(history, "champion") == ["1"]
    assert alias_stack(history, "challenger") == ["2"]


def test_history_roundtrips_through_tags_in_sequence_order() -> None:
    history = _history(("promote", None, "1"), ("promote", "1", "2"))
    tags = {event.tag_key: event.to_tag_value() for event in reversed(history)}
    tags["unrelated"] = "x"
    tags["prefix_registry.alias_history.999999"] = "not json"
    assert history_from_tags(tags) == history
