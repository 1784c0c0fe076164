"""No silent hangs, no silent exits: the failures a new user meets first (issue #19)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import miniray
from miniray.exceptions import RayTaskError


# -- actor handles given to a constructor -------------------------------------------

def test_actor_handle_passed_to_a_constructor_positional_keyword_and_nested(ray):
    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, k):
            self.n += k
            return self.n

    @ray.remote
    class User:
        def __init__(self, first, many, keyword=None, ref_list=None):
            self.handles = [h for h in (first, *many, keyword) if h is not None]
            self.ref_list = ref_list

        def bump(self):
            return [ray.get(h.add.remote(1)) for h in self.handles]

        def nested_ref_value(self):
            return ray.get(self.ref_list[0])

    a, b, c = Counter.remote(), Counter.remote(), Counter.remote()
    slow = ray.remote(lambda: "late").remote()
    user = User.remote(a, [b], keyword=c, ref_list=[slow])
    assert ray.get(user.bump.remote(), timeout=60) == [1, 1, 1]
    assert ray.get(user.nested_ref_value.remote(), timeout=60) == "late"
    # An actor handle as the only argument, and a task holding a handle in a dict.
    only = User.remote(a, [], keyword=None)
    assert ray.get(only.bump.remote(), timeout=60)[0] == 2

    @ray.remote
    def use(handles):
        return ray.get(handles["a"].add.remote(10))
    assert ray.get(use.remote({"a": a}), timeout=60) == 12
