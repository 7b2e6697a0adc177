"""Fit a scaled logistic regression on the rows FarmIQ hands over and log it as ``model``."""

from __future__ import annotations

import argparse

import mlflow
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-csv", required=True)
    ap.add_argument("--label", default="label")
    ap.add_argument("--C", type=float, default=1.0)
    a = ap.parse_args()
    df = pd.read_csv(a.train_csv)
    X = df.drop(columns=[a.label]).to_numpy(dtype="float32")
    y = df[a.label].to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=a.C, max_iter=1000)).fit(X, y)
    with mlflow.start_run():  # the run FarmIQ started (MLFLOW_RUN_ID)
        mlflow.log_metric("project_train_accuracy", float(model.score(X, y)))
        mlflow.set_tag("trainer", "barn_project")
        mlflow.sklearn.log_model(model, name="model", input_example=X[:5])


if __name__ == "__main__":
    main()
