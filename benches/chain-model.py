#!/usr/bin/env python3
"""chain-model.py - cost of delta chains over many versions, in a model with additive changes.

Each version of a chunk changes about `c` bytes that no earlier version changed, so a delta
between versions i and j costs c*|i-j|; storing the chunk whole costs `w`. Chains are at most
D deltas deep. At the limit the writer picks a base among the chain's levels (policy), and a
delta against the whole chunk over `keep`*w is stored whole instead (a new chain).

Policies at the limit:
  root  - the whole chunk the chain ends in (the writer before 2026-12-02)
  all   - the level whose delta, shared over the levels it leaves below D, is least (the
          writer's `Chain::base`)

Prints the mean cost per version (in units of c) over the first 12, the first 48 and
versions 200-400, for several `keep` shares. benches/RESULTS.md, "Long horizons".
Usage: python3 benches/chain-model.py [w/c, default 60]
"""
import sys


def simulate(policy, versions, w, keep, depth=4):
    # each node: (index of its base or None when stored whole, its depth)
    nodes = [(None, 0)]
    costs = []
    for i in range(1, versions):
        prev = i - 1
        if nodes[prev][1] < depth:
            candidates = [(prev, nodes[prev][1])]
        else:
            path, j = [], prev
            while j is not None:
                path.append((j, nodes[j][1]))
                j = nodes[j][0]
            candidates = [path[-1]] if policy == "root" else [p for p in path if p[1] < depth]
        # least cost per level left, then least cost
        _, cost, base, base_depth = min(
            ((i - j) / (depth - d), i - j, j, d) for j, d in candidates
        )
        if base_depth == 0 and cost > keep * w:
            nodes.append((None, 0))
            costs.append(w)
        else:
            nodes.append((base, base_depth + 1))
            costs.append(cost)
    return costs


def mean(xs):
    return sum(xs) / len(xs)


def main():
    w = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    print(f"w/c = {w:g}; mean cost per version in units of c")
    print("policy keep | v1-12 | v1-48 | v200-400")
    for keep in (0.33, 0.5, 0.75):
        for policy in ("root", "all"):
            cs = simulate(policy, 401, w, keep)
            print(f"{policy:5} {keep:4} | {mean(cs[:11]):5.2f} | {mean(cs[:47]):5.2f} | "
                  f"{mean(cs[199:]):5.2f}")


if __name__ == "__main__":
    main()
