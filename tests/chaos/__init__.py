"""The chaos suite: the whole pipeline on replayed real captures under seeded faults.

    make chaos                      # 10 rounds of every fault, docs/RELIABILITY.md
    make chaos ROUNDS=20            # 20 of every fault (about 2 hours)
    make chaos SEED=7 ROUNDS=3      # another schedule, shorter

tests/integration/test_chaos.py runs one round of every fault inside `make test`.
"""
