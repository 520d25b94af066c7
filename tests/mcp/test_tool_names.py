"""The names a service's tools are offered to the model under (apps.mcp.tool_names)."""

from __future__ import annotations

import re

from apps.mcp.tool_names import exposed_tools

OPENAI_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def listed(*names: str) -> list[dict[str, object]]:
    return [{"name": name, "description": f"the tool {name}", "input_schema": {"type": "object"}} for name in names]


def test_names_that_clean_up_alike_get_a_suffix_in_the_order_of_the_list() -> None:
    tools = exposed_tools("clash", listed("a.b", "a_b", "a b", "dup", "dup"))
    assert [(tool.name, tool.exposed_name) for tool in tools] == [
        ("a.b", "clash__a_b"),
        ("a_b", "clash__a_b_2"),
        ("a b", "clash__a_b_3"),
        ("dup", "clash__dup"),  # listed twice, offered once
    ]
    assert [tool.renamed for tool in tools] == [True, True, True, False]


def test_a_name_that_needs_no_suffix_keeps_it_and_the_others_go_round_it() -> None:
    tools = exposed_tools("x", listed("a.b", "a_b", "a_b_2", "list_stations"))
    assert [tool.exposed_name for tool in tools] == ["x__a_b", "x__a_b_3", "x__a_b_2", "x__list_stations"]


def test_names_cut_at_64_characters_stay_apart_and_valid() -> None:
    long = "get_water_levels_of_every_station_in_the_basin_for_the_whole_year_"
    tools = exposed_tools("hydrology", listed(long + "2025", long + "2026", long + "2027"))
    names = [tool.exposed_name for tool in tools]
    assert len(set(names)) == 3
    assert all(OPENAI_FUNCTION_NAME.fullmatch(name) for name in names), names
    assert names[0] == f"hydrology__{long}"[:64]
    assert [name[-2:] for name in names[1:]] == ["_2", "_3"]


def test_the_first_of_each_name_is_kept_with_its_own_description() -> None:
    first, second = listed("dup", "dup")
    second["description"] = "another"
    (tool,) = exposed_tools("s", [first, second])
    assert (tool.name, tool.description) == ("dup", "the tool dup")


def test_names_in_other_scripts_are_spelt_in_ascii() -> None:
    """``查询水位`` and ``降雨量`` were offered as ``svc____`` and ``svc_____2``: the model could not tell them apart
    by name."""
    tools = exposed_tools("svc", listed("查询水位", "降雨量", "café", "水位 query", "😀"))
    assert [tool.exposed_name for tool in tools] == [
        "svc__ChaXunShuiWei",
        "svc__JiangYuLiang",
        "svc__cafe",
        "svc__ShuiWei_query",
        "svc___grinning_",
    ]
    assert all(tool.renamed for tool in tools)
    assert all(OPENAI_FUNCTION_NAME.fullmatch(tool.exposed_name) for tool in tools)


def test_ascii_names_keep_the_names_they_had_and_spelt_ones_go_round_them() -> None:
    """Stored conversations name the ASCII tools: a spelt name that meets one gets the suffix, wherever it is in
    the list, and the ASCII tools' suffixes stay those of before (when ``水位`` and ``雨量`` were ``x____``)."""
    tools = exposed_tools("x", listed("水位", "ShuiWei", "水位.", "a.b", "a_b", "阿", "__"))
    assert [(tool.name, tool.exposed_name) for tool in tools] == [
        ("水位", "x__ShuiWei_2"),
        ("ShuiWei", "x__ShuiWei"),
        ("水位.", "x__ShuiWei_"),
        ("a.b", "x__a_b"),
        ("a_b", "x__a_b_2"),
        ("阿", "x__A"),
        ("__", "x_____2"),  # as before: "水位" was x____ and came first
    ]


def test_spelt_names_are_cut_at_64_and_stay_apart() -> None:
    tools = exposed_tools("hydrology", listed("查询" * 40 + "一", "查询" * 40 + "二"))
    names = [tool.exposed_name for tool in tools]
    assert names == [f"hydrology__{'ChaXun' * 40}"[:64], f"hydrology__{'ChaXun' * 40}"[:62] + "_2"]
    assert all(OPENAI_FUNCTION_NAME.fullmatch(name) for name in names)
