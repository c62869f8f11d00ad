"""Convert TransferAttack's README tables (CSV, one row per attack, one column per target) into
flatbench's published-numbers format under conf/published/ (one row per attack x target, with
the flatbench method that reproduces it, the source table and commit, and a note where the
flatbench target differs from TransferAttack's).

    python scripts/import_transferattack_tables.py ../shared/published

The ResNet-50 rows come from the all-rows table (every method of that README), so that RAP,
GRA, MEF and ANDA are there too. GNP rows become attack "GNP-TA" (method gnp_ta), GAA rows "GAA-TA" (method
gaa_ta) and AWT rows "AWT-TA" (method awt_ta): they come from TransferAttack's ports, not from the papers'
formulas, and must never be set beside flatbench's `gnp`, `gaa` or `awt`.
"""
import sys
from pathlib import Path

import pandas as pd

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/published")
OUT = Path(__file__).resolve().parent.parent / "flatbench" / "conf" / "published"
LABELS = {"I-FGSM": ("I-FGSM", "ifgsm"), "MI-FGSM": ("MI-FGSM", "mifgsm"), "NI-FGSM": ("NI-FGSM", "nifgsm"),
          "VMI-FGSM": ("VMI-FGSM", "vmifgsm"), "GNP": ("GNP-TA", "gnp_ta"), "PGN": ("PGN", "pgn"),
          "DIM": ("MI-FGSM+DIM", "dim"), "TIM": ("MI-FGSM+TIM", "tim"), "SIM": ("MI-FGSM+SIM", "sim"),
          "Admix": ("MI-FGSM+Admix", "admix"), "RAP": ("RAP", "rap"), "GRA": ("GRA", "gra"), "MEF": ("MEF", "mef"),
          "ANDA": ("ANDA", "anda"), "EMI-FGSM": ("EMI-FGSM", "emifgsm"),
          "BSR": ("MI-FGSM+BSR", "bsr"), "SIA": ("MI-FGSM+SIA", "sia"), "CWA": ("CWA", "cwa"),
          "LGV": ("MI-FGSM", "mifgsm"), "GAA": ("GAA-TA", "gaa_ta"), "FGSRA": ("FGSRA", "fgsra"),
          "AWT": ("AWT-TA", "awt_ta")}
# Rows of the README's ResNet-50 table that the all-rows CSV lacks: the README writes them without an
# opening <tr>, and the conversion skipped them. Copied from README.md at 2663e4a (the GAA and FGSRA rows,
# linked to ./transferattack/gradient/gaa.py and fgsra.py), in the table's column order. GAA's numbers come from TransferAttack's
# port, so they are GAA-TA's (method gaa_ta).
MISSING_ROWS = {"transferattack_readme_rn50_2663e4a_all.csv": [
    ["GAA", 95.5, 84.6, 82.5, 81.8, 43.3, 59.9, 70.7, 66.3, 49.3, 71.1, 43.5, 75.9, 40.9],
    ["FGSRA", 97.9, 89.7, 89.6, 86.2, 45.7, 67.8, 75.9, 75.9, 46.6, 72.5, 36.3, 77.4, 32.2]]}
# Rows crafted on an ensemble, not on the table's surrogate: TransferAttack's example script runs CWA on
# resnet50, vgg16, mobilenet_v2 and inception_v3 (experiment=transferattack_ensemble; surrogate column as
# flatbench writes a list: the names joined by +).
ENSEMBLE_ROWS = {"CWA"}
ENSEMBLE = "+".join(["torchvision:resnet50.IMAGENET1K_V2", "torchvision:vgg16.IMAGENET1K_V1",
                     "torchvision:mobilenet_v2.IMAGENET1K_V2", "torchvision:inception_v3.IMAGENET1K_V1"])
# Rows crafted on another surrogate: LGV is MI-FGSM on the 40 snapshots of the LGV release, unzipped into
# ./lgv_models as TransferAttack's instructions say (experiment=transferattack_lgv, surrogate=lgv:lgv_models).
SURROGATE_ROWS = {"LGV": ("transferattack_lgv", "lgv:lgv_models")}
NOTES = {"AT": "flatbench's AT key is timm's adversarially trained Inc-v3 (inception_v3.tf_adv_in1k), not TransferAttack's AT model (not on the hub): comparable in kind only",
         "HGD": "no flatbench target: HGD needs its own denoiser weights",
         "NRP": "no flatbench target: NRP needs its own purifier weights",
         "DiffPure": "no flatbench target: DiffPure needs its own diffusion-model weights",
         "RS": "flatbench's RS key is randomized smoothing (sigma 0.25, 100 votes) over the surrogate's standard weights, not Cohen et al.'s noise-trained ResNet-50: comparable in kind only"}
# Rows whose numbers the port makes in a way a cell does not repeat, whatever the target.
ATTACK_NOTES = {"AWT": "TransferAttack's AWT tunes the surrogate on its batches of 32 and carries SAM's momentum and last "
                       "gradient from one batch to the next; flatbench tunes each batch (25 images here) from the "
                       "surrogate's own weights: comparable in kind only"}
for src, exp, sur, commit, table in [
    ("transferattack_readme_rn50_2663e4a_all.csv", "transferattack_rn50", "torchvision:resnet50.IMAGENET1K_V2", "2663e4a", "ResNet-50"),
    ("transferattack_readme_rn18_696e8a1.csv", "transferattack_rn18", "torchvision:resnet18.IMAGENET1K_V1", "696e8a1", "ResNet-18")]:
    # The all-rows table holds every method of the README (some twice, under two categories):
    # keep those flatbench implements, once each.
    df = pd.read_csv(SRC / src).drop(columns=["category"], errors="ignore")
    df = pd.concat([df, pd.DataFrame(MISSING_ROWS.get(src, []), columns=df.columns)], ignore_index=True)
    df = df[df["attack"].isin(list(LABELS))].drop_duplicates()
    if df["attack"].duplicated().any():
        raise SystemExit(f"{src}: one attack with two different rows: {sorted(df[df['attack'].duplicated()]['attack'])}")
    rows, ensemble_rows, surrogate_rows = [], [], []
    for _, r in df.iterrows():
        label, method = LABELS[r["attack"]]
        ens = r["attack"] in ENSEMBLE_ROWS
        other = SURROGATE_ROWS.get(r["attack"])
        for target in df.columns[1:]:
            (ensemble_rows if ens else surrogate_rows if other else rows).append({
                         "experiment": "transferattack_ensemble" if ens else other[0] if other else exp,
                         "surrogate": ENSEMBLE if ens else other[1] if other else sur,
                         "attack": label, "method": method, "eps": 16,
                         "target": target, "asr": r[target],
                         "source": f"TransferAttack README {table} table, commit {commit} (github.com/Trustworthy-AI-Group/TransferAttack)",
                         "note": "; ".join(n for n in (ATTACK_NOTES.get(r["attack"], ""), NOTES.get(target, "")) if n)})
    pd.DataFrame(rows).to_csv(OUT / f"{exp}.csv", index=False)
    print(exp, len(rows))
    if ensemble_rows:
        pd.DataFrame(ensemble_rows).to_csv(OUT / "transferattack_ensemble.csv", index=False)
        print("transferattack_ensemble", len(ensemble_rows))
    if surrogate_rows:
        pd.DataFrame(surrogate_rows).to_csv(OUT / "transferattack_lgv.csv", index=False)
        print("transferattack_lgv", len(surrogate_rows))
