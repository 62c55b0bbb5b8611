"""The parts the training recipe (:mod:`acealign.train`) is made of, each usable and tested alone.

- :mod:`.config`: defaults < config file < ``--set`` overrides, validation, resume checks;
- :mod:`.data`: training/validation pairs of a split, subsampling, epoch order, step batches,
  scoring requests;
- :mod:`.schedule`: per-epoch objective weights, the stage plan, optimizer and LR schedule;
- :mod:`.model`: the base model plus a fresh LoRA adapter;
- :mod:`.step`: the loss of a micro-batch and one optimizer step (gradients averaged over processes);
- :mod:`.checkpoint`: the run directory's files: log, adapters, resumable checkpoints;
- :mod:`.evaluation`: alignment on training/validation cells, during and after a run.
"""
