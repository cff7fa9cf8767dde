"""The forget flow, end to end; imports no gRPC or protobuf code (servicers/convert.py does that).

A Forget, in order:
- `jobs.py`: the request and job as domain values (`ForgetPayload.validated`, `ForgetJob`).
- `resolution.py`: the server's corpus; what a request resolves to in it (the engine's resolver),
  for the guard at ack, the dry run, and the worker.
- `coordinator.py`: in the server: ledger row -> guard entries armed -> FILTERING -> reply; later
  swaps verified adapters into the serving stack.
- `ledger/`: the durable record every step reads and writes (the only channel between processes).
- `supervisor.py`: in the server: runs `lethe worker` as a child process, restarting it.
- `worker.py`: in that child: claims jobs, trains and verifies an adapter (unlearn_engine),
  writes it to the adapter store.
- `hits.py`, `monitor.py`, `probes.py`: after ACTIVE: guard hits per job, and the leakage monitor
  asking the served model the job's sealed probes.
- `layout.py`: where all of it lives in the data directory.

Importing this package imports nothing; `worker.py` is the only module that pulls in the
trainer (torch, transformers, peft), and only the worker process imports it.
"""
