"""fkal.settings: differences named by their flags, the row digest without the seed, settings added later."""
from fkal import settings as st


def base(**over):
    s = {"seed": 0, "dataset": "mnist", "train": {"epochs": 50, "lr": 0.05}, "query_size": 125,
         "options": {"vaal_iterations": 150}}
    s.update(over)
    return s


def test_differences_are_named_by_their_flags():
    diffs = st.differences(base(), base(query_size=50, train={"epochs": 2, "lr": 0.05}))
    assert [d[0] for d in diffs] == ["query_size", "train.epochs"]
    text = st.describe(diffs)
    assert "--pool-size: 125 there, 50 now" in text and "--epochs: 50 there, 2 now" in text
    assert "--vaal-iterations: 150 there, 10 now" in st.describe(st.differences(base(), base(options={"vaal_iterations": 10})))
    assert st.differences(base(), base()) == []


def test_the_row_digest_ignores_the_seed_only():
    assert st.settings_id(base(seed=0)) == st.settings_id(base(seed=7))
    assert st.settings_id(base()) != st.settings_id(base(query_size=50))
    assert st.settings_id(base()) == st.settings_id(dict(reversed(list(base().items()))))   # key order


def test_a_setting_added_later_at_its_old_value_changes_nothing():
    old = base()
    new = base(taps="pre")
    assert st.differences(old, new) == [] and st.settings_id(old) == st.settings_id(new)
    other = base(taps="post")
    assert st.differences(old, other) == [("taps", "pre", "post")] and st.settings_id(old) != st.settings_id(other)
    assert st.differences(base(world_size=2), base()) == [("world_size", 2, 1)]
    assert st.describe(st.differences(old, other)) == "--taps: pre there, post now"
