"""A separate process for the tests of test_run_survival.py (real processes, real SIGKILL).

    python run_worker.py train <root> <epochs> <ready> <others...>   train the small run on the
        fake split once every ready file exists (so that the processes start together); prints
        {"run_id": ..., "trained": bool}
    python run_worker.py hang-save <root> <ready>   resume the small run from epoch 3; the write
        of its epoch-6 checkpoint hangs once the temporary file exists (then the test kills it)
    python run_worker.py hold-lock <folder> <ready> hold the folder's lock until killed
    python run_worker.py fsize <root> <bytes>       train the small run with no file allowed
        over <bytes> (RLIMIT_FSIZE, SIGXFSZ ignored so that writes raise OSError); prints
        {"error": ..., "type": ...} or {"run_id": ...}
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("GRADKIT_DEVICE", "cpu")

import torch  # noqa: E402
from test_runs import fake_split, small  # noqa: E402

import gradkit.training.runs as T  # noqa: E402
from gradkit.training.store import folder_lock  # noqa: E402


def _wait_for(paths, seconds=60):
    deadline = time.time() + seconds
    while not all(Path(p).exists() for p in paths):
        if time.time() > deadline:
            raise TimeoutError(f"never saw {paths}")
        time.sleep(0.02)


def main(argv):
    command = argv[0]
    if command == "hold-lock":
        with folder_lock(Path(argv[1])):
            Path(argv[2]).touch()
            time.sleep(600)
        return
    os.environ["GRADKIT_ROOT"] = argv[1]
    split = fake_split()
    T._load_split = lambda config: split
    if command == "train":
        epochs, ready, others = int(argv[2]), argv[3], argv[4:]
        trained = []
        real_train = T._train

        def slow_train(*args, **kwargs):
            trained.append(True)
            time.sleep(1.0)  # hold the lock long enough for the other process to queue
            return real_train(*args, **kwargs)

        T._train = slow_train
        Path(ready).touch()
        _wait_for([ready, *others])
        run = T.get_run(small(epochs=epochs), progress=False)
        print(json.dumps({"run_id": run.run_id, "trained": bool(trained),
                          "finished": run.finished}), flush=True)
    elif command == "fsize":
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = int(argv[2])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        try:
            run = T.get_run(small(), progress=False)
            print(json.dumps({"run_id": run.run_id}), flush=True)
        except Exception as err:  # the test reads what was raised
            print(json.dumps({"error": str(err), "type": type(err).__name__}), flush=True)
    elif command == "hang-save":
        ready = argv[2]
        folder = Path(argv[1]) / "checkpoints" / "plastic_3000hz_raw"
        real_save = torch.save

        def hanging_save(obj, f, *args, **kwargs):
            # the write probe sizes the epoch-6 payload too: hang only inside the file's write
            writing = any(folder.glob(".model_raw_epoch_6_*.tmp"))
            if isinstance(obj, dict) and obj.get("epoch") == 6 and writing:
                Path(ready).touch()  # inside atomic_write: the temporary file exists, empty
                time.sleep(600)
            return real_save(obj, f, *args, **kwargs)

        torch.save = hanging_save
        T.get_run(small(), progress=False)


if __name__ == "__main__":
    main(sys.argv[1:])
