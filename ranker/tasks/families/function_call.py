"""`function_call`: pick one tool from a short list and fill its arguments (checker: json_call).

An xLAM analogue. The tool catalog, the argument value pools and the request phrasings
live in `ranker/tasks/data/tools.json`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from ranker.tasks.families.base import Family
from ranker.tasks.problem import Problem

# A one-shot example (a tool that is never among those listed) shows the exact form: without
# it SmolLM2-135M-Instruct almost never produced a parsable call (see the README's results).
FORMAT_INSTRUCTION = (
    'Reply with only the JSON call, in the form {"name": "tool_name", "arguments": {"argument": value}}. '
    'For example, for "What time is it in Tokyo?" with a tool get_time, the reply is '
    '{"name": "get_time", "arguments": {"city": "Tokyo"}}.'
)
# difficulty -> number of tools listed in the prompt (one of them is the right one)
TOOLS_SHOWN = {1: 2, 2: 3, 3: 4, 4: 6, 5: 8}


@lru_cache(maxsize=1)
def load_tool_catalog() -> dict[str, Any]:
    """The shipped catalog: {"pools": {pool: [values]}, "tools": [tool spec, ...]}."""
    text = (resources.files("ranker.tasks") / "data" / "tools.json").read_text(encoding="utf-8")
    return json.loads(text)


def tool_spec_line(tool: dict[str, Any]) -> str:
    """One tool as the model sees it: name, description and typed parameters, as JSON."""
    parameters = {
        name: {"type": spec["type"], "description": spec["description"]}
        for name, spec in tool["parameters"].items()
    }
    return json.dumps({"name": tool["name"], "description": tool["description"], "parameters": parameters})


@dataclass(frozen=True)
class FunctionCall(Family):
    """Tool calling: the prompt lists tools as JSON and gives a user request.

    The model must reply {"name": ..., "arguments": {...}}; names and every argument must
    match (numbers numerically). Difficulty sets how many tools are listed:
    1 -> 2, 2 -> 3 (default), 3 -> 4, 4 -> 6, 5 -> 8.
    """

    difficulty: int = 1  # calibrated on SmolLM2-135M-Instruct: it rarely solves level 2 (see the README's results)

    name = "function_call"
    description = "xLAM-like tool calling: choose the tool and its arguments from a request; answer is JSON."

    def sample(self, rng: random.Random) -> Problem:
        catalog = load_tool_catalog()
        shown = rng.sample(catalog["tools"], TOOLS_SHOWN[self.difficulty])
        target = rng.choice(shown)
        arguments = self._draw_arguments(rng, target, catalog["pools"])
        request = rng.choice(target["requests"]).format(**arguments)
        tool_lines = "\n".join(tool_spec_line(tool) for tool in shown)
        prompt = f"You can call these tools:\n{tool_lines}\n\nUser request: {request}\n\n{FORMAT_INSTRUCTION}"
        answer = json.dumps({"name": target["name"], "arguments": arguments})
        return Problem(prompt=prompt, answer=answer, checker="json_call",
                       meta={"tool": target["name"], "tools": [tool["name"] for tool in shown]})

    @staticmethod
    def _draw_arguments(rng: random.Random, tool: dict[str, Any], pools: dict[str, list]) -> dict[str, Any]:
        """One value per parameter; parameters sharing a pool get different values
        (no conversion from EUR to EUR, no directions from Paris to Paris)."""
        arguments: dict[str, Any] = {}
        used: dict[str, set] = {}
        for parameter, spec in tool["parameters"].items():
            pool_name = spec["pool"]
            taken = used.setdefault(pool_name, set())
            value = rng.choice([value for value in pools[pool_name] if value not in taken])
            taken.add(value)
            arguments[parameter] = value
        return arguments
