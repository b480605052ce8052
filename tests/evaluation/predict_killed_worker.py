"""`self1e ARGUMENTS` that kills its own process (SIGKILL, as `kill -9` would) right after the process has written its
first predictions shard: the worker of the interrupted run in `test_predict.py`.

    accelerate launch --config_file examples/accelerate/cpu_2proc.yaml tests/evaluation/predict_killed_worker.py \
        predict --dataset "synthetic[:8]" --shard-size 1 --out OUT
"""

import os
import signal
import sys
from pathlib import Path

from transformers_self1e.cli import main
from transformers_self1e.evaluation import predict

write_beside_and_rename = predict._write_beside_and_rename


def write_then_die_after_a_shard(path: Path, write) -> None:
    write_beside_and_rename(path, write)
    if path.name.startswith("predictions-"):
        os.kill(os.getpid(), signal.SIGKILL)


predict._write_beside_and_rename = write_then_die_after_a_shard
sys.exit(main(sys.argv[1:]))
