"""The pretraining objectives, all on device inside the jitted step.

base.py     the interface every objective implements (`Objective`, `Counts`) and the shared MLM loss
masking.py  which positions are masked and with what: ELECTRA's rule, whole-word n-grams, BERT's 80/10/10
electra.py  replaced-token detection: generator MLM + 50 x discriminator loss, the sampler, held-out AUC
albert.py   whole-word n-gram MLM + sentence-order prediction
distill.py  task-agnostic distillation of a BERT teacher into a student of its bottom layers
"""
