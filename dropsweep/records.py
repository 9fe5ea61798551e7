"""Names of what dropsweep stores in an Optuna study.

Everything a trial or a study records lives in Optuna user attributes under these names,
so any Optuna tool (``optuna trials``, optuna-dashboard, ``optuna.load_study``)
can read it, and the runner (writer) and the report (reader) cannot drift apart.
"""

from __future__ import annotations

# --- per trial -------------------------------------------------------------------------
FOLD_ACCURACIES = "fold_accuracies"  # list[float], held-out accuracy of each fold
ACCURACY_MEAN = "accuracy_mean"  # float, mean of FOLD_ACCURACIES (also the trial's value)
ACCURACY_STD = "accuracy_std"  # float, population std (ddof=0) of FOLD_ACCURACIES, as Brownlee
TEST_LOG_LOSS = "test_log_loss"  # float, mean held-out log-loss over folds
TRAIN_ACCURACY = "train_accuracy"  # float, mean training-fold accuracy (overfitting gap)
EPOCHS = "epochs"  # int, epochs actually trained (fewer when pruned)
WALL_TIME = "wall_time"  # float, seconds: its share of its batch's training time
CONFIG = "config"  # dict, the trial's configuration: every dimension of its family (space.Config)
ROLE = "role"  # str, one of ROLES
SEED = "seed"  # int, the seed of its batch's stream: initial weights, masks, row order
FAIL_REASON = "fail_reason"  # str, why a FAIL trial failed ("loss became NaN at epoch 3, fold 2")
INTERRUPTED = "interrupted"  # bool, set on a trial stopped by Ctrl-C / SIGTERM, or surplus
ENQUEUED = "enqueued_at"  # str, ISO time a planned trial was queued (finds ones a kill left)

ROLE_BASELINE = "baseline"  # the no-dropout reference configuration, run first
ROLE_FIXED = "fixed"  # one configuration of a fixed list or grid
ROLE_SEARCH = "search"  # proposed by the sampler
ROLE_CANDIDATE = "candidate"  # a confirmation trial of one of the search's best configurations
# (in a test study: the chosen dropout set-up)
# a test study's trial of the tuned no-dropout (the best of the no-dropout placement), scored
# beside the chosen and the baseline so that tuning's share of a gain is told apart
ROLE_TUNED = "tuned"
ROLES = (ROLE_BASELINE, ROLE_FIXED, ROLE_SEARCH, ROLE_CANDIDATE, ROLE_TUNED)

# Trials of a confirmation study (NAME:confirm)
SOURCE_TRIAL = "source_trial"  # int, the search trial whose configuration this re-evaluates
REPEAT = "repeat"  # int, which repetition of k-fold CV (each its own fold split)
CV_SEED = "cv_seed"  # int, the seed of that repetition's fold split

# --- where ---------------------------------------------------------------------------
DEFAULT_STORAGE = "sqlite:///results/dropsweep.db"  # embedded, zero set-up (--storage URL)

# --- per study -------------------------------------------------------------------------
STUDY_SWEEP = "dropsweep_sweep"  # dict, the whole resolved sweep configuration
STUDY_VERSION = "dropsweep_version"  # str
STUDY_TORCH_VERSION = "torch_version"  # str
STUDY_SWEEP_FILE = "sweep_file"  # str, the path the sweep was read from (absolute; as typed
# before issue 24): what the stored sweep's relative paths are relative to
# dict {"sha256", "labels", "rows", "features", "file"}, on a search study: the rows it
# searches (after eval.test's hold-out), as data.rows_record gives them; other rows refused
DATA_ROWS = "data_rows"
CONFIRM_OF = "confirm_of"  # str, on a confirmation study: the search study it confirms
PER_PLACEMENT = "per_placement"  # dict, on a confirmation study run per placement (confirm's
# default since issue 25; before it, --per-placement):
# {placement: {"config": dict, "source_trial": int}}, the best of each placement it confirmed
# float, on a confirmation study: n_test / n_train of its splits (the Nadeau-Bengio
# correction's ratio): 1/(k-1) for k-fold, measured for a hold-out split
TEST_TRAIN_RATIO = "test_train_ratio"
CONFIRM_SUFFIX = ":confirm"
# The companion study `dropsweep test` writes (NAME:test): one trial per (role, repeat,
# round), its value the test accuracy
TEST_SUFFIX = ":test"
TEST_OF = "test_of"  # str, on a test study: the search study whose winner it tests
TEST_FINGERPRINT = "test_fingerprint"  # str, SHA-256 of the test rows and labels scored
TEST_ROWS = "test_rows"  # int, how many test rows
TEST_CHOSEN = "test_chosen"  # dict {config, source_trial, rule}: what was tested
# dict {config, source_trial, rule}, on a test study: the tuned no-dropout its latest round
# scores ("confirmed": the confirmation's per_placement entry; "best": the search's best); its
# trials are ROLE_TUNED, none when it is the baseline's configuration (trained once, as the
# baseline). A test study made before issue 25 has none: chosen and baseline only
TEST_TUNED = "test_tuned"
TEST_ROUNDS = "test_rounds"  # int, times the test set was scored (1 + every --rescore)
TEST_RESCORED = "test_rescored"  # list[str], when each --rescore happened (ISO, UTC)
# int, the seeds the latest round was asked for: a round a stop cut short goes on to these;
# more seeds are a new round (--rescore)
TEST_REPEATS = "test_repeats"
TEST_INCLUDES_VALIDATION = "test_includes_validation"  # bool: trained on every searched row
TEST_ROUND = "test_round"  # int, on a test trial: the round it belongs to  # the companion study `dropsweep confirm` writes beside a search
# dict {"by": "placement" | "none", "since": n}: how the searches since trial n shared out
# the trials (search.balance; the search section may change between runs)
BALANCE = "balance"
# int, on a hold-out study: rows in its validation split (a one-split score's binomial
# standard error, for --select 1se)
VALIDATION_ROWS = "validation_rows"
STUDY_SCHEMA = "dropsweep_schema"  # int, how the study's sweep and trials are written
# str, on a study: the directory its batches' checkpoints go to (every worker uses the same)
CHECKPOINTS = "checkpoints"
# str, on a study: its own random id (32 hex digits), set when dropsweep creates it (or first
# needs it, for an older study): its checkpoint files are kept under it and carry it
STUDY_UID = "dropsweep_uid"
# int, on a trial: its batch, by the number of the batch's first trial (its checkpoint file)
BATCH = "batch"
# dict {"trial", "epoch", "claim"}, on a trial that went on from a checkpoint: the trial it
# continues, the epoch it went on from, and the claim on the checkpoint file it took
RESUMED = "resumed"
# Optuna's own system attributes on a trial that runs a lost one's configuration again (as
# its RetryHeartbeatStaleTrialCallback writes them, so Optuna's retried_trial_number and
# retry_history read dropsweep's): int, the first trial of the chain; list[int], every
# trial before this one, the one it runs again last
FAILED_TRIAL = "failed_trial"
RETRY_HISTORY = "retry_history"
# str, the fail_reason of a trial whose worker died (failed as stale: no heartbeat)
WORKER_DIED = "interrupted: worker died"
# str, the fail_reason of a trial dropped before it trained: workers asking at the same
# moment took the study's last places, or its placement's share (search.balance), first
SURPLUS = "surplus: the places it was asked for were filled first"

# 1: before model families (no STUDY_SCHEMA attribute; model has no ``family``)
# 2: model.family; a trial's config holds every dimension of its family
SCHEMA_VERSION = 2


def confirm_name(study_name: str) -> str:
    """The companion confirmation study of the search study ``study_name``."""
    return study_name + CONFIRM_SUFFIX


def study_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a study, or None. Names are printed in tables and in
    commands to copy: an empty one would silently mean another, and a control character
    (a newline, an escape) would split a table or a terminal line."""
    if not name.strip():
        return "must not be empty"
    if not name.isprintable():
        return f"must not contain control characters, got {name!r}"
    return None
