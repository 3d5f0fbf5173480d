"""Default values of every config key of the toolkit (plugin keys live in their own files).

Conventions: UPPER_CASE keys with fast-reid names where one exists; batch sizes are global
(summed over processes); periods and schedule positions are in epochs unless the key name
says ``_ITERS``.
"""

from .config import CfgNode as CN
from .extensions import declare_data_dependent_key

_C = CN()

# Plugins to import before the rest of a config file is merged: dotted module names, or paths to
# a .py file / package folder relative to the file that lists them (see utils/plugins.py).
_C.PLUGINS = ()

# ---------------------------------------------------------------------------------------------
# MODEL
# ---------------------------------------------------------------------------------------------
_C.MODEL = CN()
# Registered name in META_ARCH_REGISTRY: "Baseline" (bag of tricks); plugins add others
# (the CLIP-ReID plugin: "CLIPBaseline", "CLIPReID").
_C.MODEL.META_ARCHITECTURE = "Baseline"
# "auto" = cuda when available, else cpu; or any torch device string.
_C.MODEL.DEVICE = "auto"
# torch.compile the model for training and evaluation: "" (off), or a torch.compile mode: "default",
# "reduce-overhead", "max-autotune". Works under DDP; CLIP-ReID's stage 1 runs the eager model.
_C.MODEL.COMPILE = ""
# torch.compile backend ("inductor"; "aot_eager" compiles the graph without generating kernels).
_C.MODEL.COMPILE_BACKEND = "inductor"
# Channels-last memory format for convolutional backbones: "auto" (on a GPU, for backbones that
# declare prefers_channels_last), "on", "off".
_C.MODEL.CHANNELS_LAST = "auto"
# Checkpoint to load before training or evaluation (this project's, a plain state dict, or a format
# a plugin converts, e.g. the reference CLIP-ReID's). With weights given, the backbone's pretrained
# file is not read for evaluation (the weights hold every tensor).
_C.MODEL.WEIGHTS = ""
# Accept MODEL.WEIGHTS that fill only part of the model (the rest keeps its initialisation);
# False makes that an error naming the missing / mismatched tensors.
_C.MODEL.ALLOW_PARTIAL_WEIGHTS = False
# fast-reid's freeze: for the first SOLVER.FREEZE_ITERS optimizer steps, parameters whose name
# matches one of these patterns from its start (re.match, e.g. "backbone", "b1") are not updated, and
# the model's direct children named here run in eval mode (their BN statistics do not move).
# Empty or FREEZE_ITERS 0 = no freeze.
_C.MODEL.FREEZE_LAYERS = ()

_C.MODEL.BACKBONE = CN()
# Registered name in BACKBONE_REGISTRY ("build_resnet_backbone", "build_resnest_backbone",
# "build_osnet_backbone", "build_vit_backbone"; the CLIP-ReID
# plugin adds "build_clip_backbone").
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
# ResNet depth (build_resnet_backbone, fast-reid's layout): "18x", "34x", "50x", "101x", "152x";
# ResNeXt "50x_32x4d", "101x_32x8d". ResNeSt (build_resnest_backbone): "50x", "101x", "200x", "269x".
# OSNet (build_osnet_backbone, torchreid's widths): "x1_0", "x0_75", "x0_5", "x0_25".
_C.MODEL.BACKBONE.DEPTH = "50x"
# Stride of layer4: 1 = bag-of-tricks "last stride" (feature map H/16 x W/16; ResNeSt dilates layer4
# instead, as fast-reid), 2 = ImageNet's.
_C.MODEL.BACKBONE.LAST_STRIDE = 1
# Normalisation layer of ResNet / ResNeSt (fast-reid's key): "BN", or "syncBN" (synchronised under DDP).
_C.MODEL.BACKBONE.NORM = "BN"
# ResNet IBN-a (fast-reid's key): bn1 of the blocks of layer1-3 = InstanceNorm on half the channels +
# BN on the other half. ImageNet weights for it are IBN-Net's files (resnet50_ibn_a-d9d0bb7b.pth).
_C.MODEL.BACKBONE.WITH_IBN = False
# ResNet squeeze-excitation in every block (fast-reid's key; no shipped fast-reid config enables it).
_C.MODEL.BACKBONE.WITH_SE = False
# ResNet non-local blocks (fast-reid's key and positions: after the last 2 blocks of layer2 and the last
# 3 (50x) / 9 (101x) of layer3; none for 18x / 34x), as fast-reid's AGW and SBS use them.
_C.MODEL.BACKBONE.WITH_NL = False
# Intermediate width of the non-local blocks: False = 1 channel, fast-reid's arithmetic
# (reduc_ratio // reduc_ratio) and the shape of its model-zoo checkpoints; True = in_channels // 2,
# the non-local paper's (and fast-reid's evident intent; not loadable from fast-reid's zoo).
_C.MODEL.BACKBONE.NL_HALF_CHANNELS = False
# build_osnet_backbone: OSNet-AIN (instance normalisation in the stem and inside the residual of
# torchreid's "INin" blocks) instead of OSNet.
_C.MODEL.BACKBONE.WITH_AIN = False
# Width of the main (pre-BN) feature the heads and losses see; 0 = the built backbone's
# out_features (the meta-architecture fills it into the config its losses are built with).
_C.MODEL.BACKBONE.FEAT_DIM = 0
# Load pretrained weights from PRETRAIN_PATH (a local file; no downloads at run time). For ResNets a
# torchvision state dict, e.g. $TORCH_HOME/hub/checkpoints/resnet50-0676ba61.pth (~ is expanded).
_C.MODEL.BACKBONE.PRETRAIN = False
_C.MODEL.BACKBONE.PRETRAIN_PATH = ""
# torchvision ViT adapted TransReID-style (build_vit_backbone); the input size is INPUT.SIZE_TRAIN
# (SIZE_TEST must equal it) and pretrained weights are a torchvision state dict at PRETRAIN_PATH.
_C.MODEL.BACKBONE.VIT = CN()
# torchvision architecture: "vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32".
_C.MODEL.BACKBONE.VIT.ARCH = "vit_b_16"
# Stride (h, w) of the patch convolution; smaller than the patch size = overlapping patches (TransReID: 12).
_C.MODEL.BACKBONE.VIT.STRIDE_SIZE = [16, 16]
# SIE: a learned camera embedding x SIE_COE added to every token (TransReID); needs NUM_CAMERAS.
_C.MODEL.BACKBONE.VIT.SIE_CAMERA = False
_C.MODEL.BACKBONE.VIT.SIE_COE = 3.0
# Cameras of the training set (rows of the SIE table); filled from the training set when 0.
_C.MODEL.BACKBONE.VIT.NUM_CAMERAS = 0
declare_data_dependent_key("MODEL.BACKBONE.VIT.NUM_CAMERAS", "num_cameras")

_C.MODEL.HEADS = CN()
# Registered name in HEAD_REGISTRY.
_C.MODEL.HEADS.NAME = "EmbeddingHead"
# Filled in from the training set when 0.
_C.MODEL.HEADS.NUM_CLASSES = 0
declare_data_dependent_key("MODEL.HEADS.NUM_CLASSES", "num_classes")
# fast-reid's meaning: the feature the metric losses (triplet, circle, cosface) see in training,
# "before" = pooled (pre-BNNeck) feature (fast-reid's default, bag of tricks), "after" = post-neck
# feature. (The evaluation feature is EVAL_FEAT; the CLIP-ReID plugin's is CLIPREID.NECK_FEAT.)
_C.MODEL.HEADS.NECK_FEAT = "before"
# The feature EmbeddingHead returns in evaluation: "after" = post-neck (fast-reid, bag of tricks),
# "before" = pooled feature (TransReID's test convention).
_C.MODEL.HEADS.EVAL_FEAT = "after"
# Global pooling (fast-reid's names, modeling/heads/pooling.py): GlobalAvgPool, FastGlobalAvgPool,
# GlobalMaxPool, AdaptiveAvgMaxPool, GeneralizedMeanPooling (GeM p=3), GeneralizedMeanPoolingP
# (learnable p), ClipGlobalAvgPool, Identity, Flatten; "avg" / "max" / "gem" = the first GAP / GMP / GeM.
_C.MODEL.HEADS.POOL_LAYER = "avg"
# Width of the embedding a head adds after the pooling; 0 = none. EmbeddingHead: a 1x1 convolution
# (fast-reid's); TorchreidHead: its fc (Linear + BN1d + ReLU; torchreid's OSNet: 512).
_C.MODEL.HEADS.EMBEDDING_DIM = 0
# BatchNorm (bias frozen at 0) after the pooling / embedding: the BNNeck.
_C.MODEL.HEADS.WITH_BNNECK = True
# Classifier layer (modeling/heads/cls_layers.py): Linear, CosSoftmax, ArcSoftmax, CircleSoftmax;
# SCALE multiplies the logits, MARGIN is the margin layers' m.
_C.MODEL.HEADS.CLS_LAYER = "Linear"
_C.MODEL.HEADS.SCALE = 1.0
_C.MODEL.HEADS.MARGIN = 0.0
# Initialisation std of the classifier weights (bag of tricks 0.001, fast-reid 0.01; TorchreidHead: of
# its fc and biased classifier, torchreid 0.01).
_C.MODEL.HEADS.CLS_INIT_STD = 0.001

# Modules trained during the first SOLVER.FIXBASE_EPOCHS epochs (torchreid's open_layers): a module
# path of the model ("heads.classifier") or its last component ("classifier" = every module of that
# name). Every other module is in eval mode with requires_grad False meanwhile.
_C.MODEL.OPEN_LAYERS = ("classifier",)

_C.MODEL.LOSSES = CN()
# Registered names in LOSS_REGISTRY; each loss reads its own sub-node below.
_C.MODEL.LOSSES.NAMES = ("CrossEntropyLoss", "TripletLoss")
_C.MODEL.LOSSES.CE = CN()
# label smoothing; 0 = plain cross-entropy; < 0 = fast-reid's adaptive smoothing ALPHA x p(target)
_C.MODEL.LOSSES.CE.EPSILON = 0.1
_C.MODEL.LOSSES.CE.ALPHA = 0.2
# Smoothing convention: "uniform" = target (1-eps) onehot + eps/C, batch mean (bag of tricks,
# TransReID, CLIP-ReID, torchreid); "fastreid" = target 1-eps, others eps/(C-1), sum divided by
# the number of non-zero per-sample losses (fast-reid's cross_entropy_loss).
_C.MODEL.LOSSES.CE.CONVENTION = "uniform"
_C.MODEL.LOSSES.CE.SCALE = 1.0
_C.MODEL.LOSSES.TRI = CN()
# Ranking margin; <= 0 = soft margin log(1 + exp(d_ap - d_an)) (fast-reid's meaning)
_C.MODEL.LOSSES.TRI.MARGIN = 0.3
_C.MODEL.LOSSES.TRI.SOFT_MARGIN = False  # True = soft margin whatever MARGIN says (CLIP-ReID's NO_MARGIN)
# True = cosine distance 2 - 2 cos (fast-reid); False = Euclidean distance
_C.MODEL.LOSSES.TRI.NORM_FEAT = False
# True = hardest positive / negative; False = softmax-weighted positives / negatives (weighted-regularised triplet, AGW)
_C.MODEL.LOSSES.TRI.HARD_MINING = True
_C.MODEL.LOSSES.TRI.SCALE = 1.0
# fast-reid's pairwise circle loss (Sun et al.) and pairwise CosFace on the metric feature.
_C.MODEL.LOSSES.CIRCLE = CN()
_C.MODEL.LOSSES.CIRCLE.MARGIN = 0.25
_C.MODEL.LOSSES.CIRCLE.GAMMA = 128.0
_C.MODEL.LOSSES.CIRCLE.SCALE = 1.0
_C.MODEL.LOSSES.COSFACE = CN()
_C.MODEL.LOSSES.COSFACE.MARGIN = 0.25
_C.MODEL.LOSSES.COSFACE.GAMMA = 128.0
_C.MODEL.LOSSES.COSFACE.SCALE = 1.0

# ---------------------------------------------------------------------------------------------
# INPUT (transforms)
# ---------------------------------------------------------------------------------------------
_C.INPUT = CN()
_C.INPUT.SIZE_TRAIN = [256, 128]  # (height, width)
_C.INPUT.SIZE_TEST = [256, 128]
_C.INPUT.INTERPOLATION_TRAIN = "bicubic"
_C.INPUT.INTERPOLATION_TEST = "bilinear"
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]  # on [0, 1] images
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.FLIP = CN()
_C.INPUT.FLIP.ENABLED = True
_C.INPUT.FLIP.PROB = 0.5
_C.INPUT.PADDING = CN()
_C.INPUT.PADDING.ENABLED = True
_C.INPUT.PADDING.SIZE = 10
_C.INPUT.PADDING.MODE = "constant"  # zeros, as the reference
_C.INPUT.REA = CN()  # random erasing of one rectangle (timm's draws), after normalisation
_C.INPUT.REA.ENABLED = True
_C.INPUT.REA.PROB = 0.5
_C.INPUT.REA.AREA = [0.02, 1.0 / 3.0]  # erased fraction of the image (fast-reid / torchvision: [0.02, 0.33])
_C.INPUT.REA.ASPECT = 0.3  # aspect ratio range [ASPECT, ASPECT_MAX], sampled log-uniformly
_C.INPUT.REA.ASPECT_MAX = 0.0  # 0: 1 / ASPECT (timm's, the reference's); fast-reid (torchvision): 3.3
# The fill: [] = per-pixel N(0, 1) noise in the normalised image (timm's mode 'pixel', the CLIP-ReID
# reference); else one value per channel in 0..255 pixel units (fast-reid's INPUT.REA.VALUE, whose default
# is the ImageNet mean: erased pixels become 0 after normalisation).
_C.INPUT.REA.VALUE = []
# Registered train augmentations (TRANSFORM_REGISTRY, clipreid_plugin.data) of the resized image, in
# order, before flip / pad / crop: e.g. ["AutoAugment"]. A plugin's augmentation is one file plus its name here.
_C.INPUT.TRANSFORMS = ()
# fast-reid's AutoAugment (the ImageNet "original" policy of the AutoAugment paper, timm's magnitudes),
# when INPUT.TRANSFORMS names it: applied with probability PROB to the resized image (fast-reid applies it
# before the resize; applying it after keeps the decoded-and-resized image cacheable).
_C.INPUT.AUTOAUG = CN()
_C.INPUT.AUTOAUG.PROB = 0.0
# Augment on the model's device: loader workers only decode and resize (or read DATALOADER.DECODE_CACHE)
# and return uint8 batches with each sample's random draws; flip, pad + crop, normalisation and random
# erasing then run per sample on the device (test loaders only normalise there). Same draws as the host
# path for the same seeds; the erasing fill comes from the device's generator (same distribution).
# Frees the CPU cores that feed a GPU (docs/PERFORMANCE.md). False: everything on the host, as the reference.
_C.INPUT.DEVICE_AUGMENT = False

# ---------------------------------------------------------------------------------------------
# DATASETS
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CN()
# Registered names in DATASET_REGISTRY; several names are combined for training.
_C.DATASETS.NAMES = ("SyntheticReID",)
_C.DATASETS.TESTS = ("SyntheticReID",)
_C.DATASETS.ROOT_DIR = "datasets"
# Skip (and count) unreadable images instead of failing.
_C.DATASETS.SKIP_BAD_IMAGES = False
# VehicleID: which test list (800, 1600 or 2400 identities) and the seed of the one
# query/gallery draw stored in the dataset object (evaluation re-draws per trial itself).
_C.DATASETS.VEHICLEID = CN()
_C.DATASETS.VEHICLEID.TEST_SIZE = 800
_C.DATASETS.VEHICLEID.SPLIT_SEED = 1234
# GenericReID (a user's own data, see docs/DATASETS.md): folder inside ROOT_DIR; file-name
# regex with named groups pid and camid (optional viewid), used when <split>.csv is absent;
# value subtracted from camera numbers (1: cameras counted from 1); "person" or "vehicle".
_C.DATASETS.GENERIC = CN()
_C.DATASETS.GENERIC.DIR = "generic"
_C.DATASETS.GENERIC.PATTERN = r"(?P<pid>-?\d+)_c(?P<camid>\d+)"
_C.DATASETS.GENERIC.CAMID_OFFSET = 1
_C.DATASETS.GENERIC.KIND = "person"
# SyntheticReID: generated on first use into ROOT_DIR/SyntheticReID (Market-1501 layout).
# Changing a value requires deleting that folder (a mismatch is reported, never overwritten).
_C.DATASETS.SYNTHETIC = CN()
_C.DATASETS.SYNTHETIC.SEED = 0
_C.DATASETS.SYNTHETIC.NUM_TRAIN_IDS = 40
_C.DATASETS.SYNTHETIC.NUM_TEST_IDS = 30
_C.DATASETS.SYNTHETIC.IMAGES_PER_ID = 8  # per identity, cycling over the cameras
_C.DATASETS.SYNTHETIC.QUERY_PER_ID = 2  # test images per identity put in query/ (distinct cameras)
_C.DATASETS.SYNTHETIC.NUM_CAMERAS = 5  # 2..9
_C.DATASETS.SYNTHETIC.NUM_DISTRACTORS = 20  # gallery images with pid 0
_C.DATASETS.SYNTHETIC.NUM_JUNK = 5  # gallery images with pid -1 (dropped by the parser)
_C.DATASETS.SYNTHETIC.SIZE = [128, 64]  # (height, width) of the JPEG files

# ---------------------------------------------------------------------------------------------
# DATALOADER
# ---------------------------------------------------------------------------------------------
_C.DATALOADER = CN()
# Registered name in SAMPLER_REGISTRY: "PKSampler" (P identities x K instances) or "RandomSampler".
_C.DATALOADER.SAMPLER = "PKSampler"
_C.DATALOADER.NUM_INSTANCE = 4
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.PIN_MEMORY = True
_C.DATALOADER.PERSISTENT_WORKERS = False
_C.DATALOADER.PREFETCH_FACTOR = 2
# Decode every image once into a shared uint8 cache: "" (off), "ram" or "mmap".
_C.DATALOADER.DECODE_CACHE = ""

# ---------------------------------------------------------------------------------------------
# SOLVER
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.SEED = 1234
_C.SOLVER.OPTIMIZER_NAME = "Adam"  # "Adam", "AdamW", "SGD" or "AMSGrad" (Adam with amsgrad=True, torchreid's)
_C.SOLVER.BASE_LR = 3.5e-4
_C.SOLVER.BIAS_LR_FACTOR = 1.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 5e-4
_C.SOLVER.WEIGHT_DECAY_BIAS = 5e-4
# Fused optimizer kernels: "auto" (fused on a GPU, foreach otherwise), "on", "off" (plain loops).
_C.SOLVER.FUSED_OPTIMIZER = "auto"
# Parameter groups: "merged" (one group per distinct setting: what fused/foreach kernels need) or
# "per_tensor" (one group per tensor, the reference implementation's optimizer layout).
_C.SOLVER.PARAM_GROUPS = "merged"
# Global batch size (all processes together).
_C.SOLVER.IMS_PER_BATCH = 64
_C.SOLVER.MAX_EPOCHS = 120
# torchreid's fixbase_epoch: the first N epochs train only MODEL.OPEN_LAYERS (the rest frozen, its
# BatchNorm statistics too); counted in MAX_EPOCHS. 0 = off.
_C.SOLVER.FIXBASE_EPOCHS = 0
_C.SOLVER.SCHED = CN()
# "WarmupMultiStepLR" (warmup, then x GAMMA at each of STEPS_EPOCHS) or "WarmupCosineLR" (warmup,
# then timm-style cosine over MAX_EPOCHS down to ETA_MIN_LR, not shifted by the warmup).
_C.SOLVER.SCHED.NAME = "WarmupMultiStepLR"
# When the LR changes: "epoch" (at the start of each epoch, as the reference) or "iter".
_C.SOLVER.SCHED.UNIT = "epoch"
_C.SOLVER.STEPS_EPOCHS = (40, 70)
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.WARMUP_EPOCHS = 10
_C.SOLVER.WARMUP_FACTOR = 0.01  # LR multiplier at position 0, rising linearly to 1 at WARMUP_EPOCHS
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" or "constant"
_C.SOLVER.ETA_MIN_LR = 1e-6  # cosine floor (absolute LR, all param groups); reached at MAX_EPOCHS
# fast-reid's schedules ("MultiStepLR", "CosineAnnealingLR"; stepped every iteration whatever
# SCHED.UNIT says): a linear warmup over WARMUP_ITERS iterations (0 = none; WARMUP_EPOCHS is then the
# warmup length in epochs), then the epoch schedule, which starts counting once warmup is over and
# DELAY_EPOCHS have passed: STEPS_EPOCHS count those counted epochs (fast-reid's SOLVER.STEPS), and the
# cosine runs T_max = MAX_EPOCHS - max(ceil(WARMUP_ITERS / iters per epoch), DELAY_EPOCHS) epochs.
_C.SOLVER.WARMUP_ITERS = 0
_C.SOLVER.DELAY_EPOCHS = 0
# LR multiplier of the parameters of the model's child named "heads" (fast-reid's HEADS_LR_FACTOR;
# it multiplies BIAS_LR_FACTOR for head biases).
_C.SOLVER.HEADS_LR_FACTOR = 1.0
# Weight decay of the parameters of normalisation layers (BN, GN, IN, LN); a negative value = the
# parameter's usual WEIGHT_DECAY / WEIGHT_DECAY_BIAS (fast-reid's configs set it, 5e-4).
_C.SOLVER.WEIGHT_DECAY_NORM = -1.0
# Optimizer steps during which the parameters matched by MODEL.FREEZE_LAYERS are not updated (the
# count is stored with the optimizer's state, so a resumed run does not freeze again).
_C.SOLVER.FREEZE_ITERS = 0
# Gradient clipping by global norm (0 = off).
_C.SOLVER.CLIP_GRAD_NORM = 0.0
# fast-reid's gradient clipping, inside the optimizer step, separately for each param group (fast-reid's
# groups are flat buffers: the norm is the group's): CLIP_TYPE "norm" (clip_grad_norm_ with CLIP_VALUE
# and NORM_TYPE) or "value" (clip_grad_value_ with CLIP_VALUE). Not together with CLIP_GRAD_NORM.
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 5.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False
# "float16" (with a GradScaler; the reference's choice) or "bfloat16" (no scaler needed; same range
# as fp32, so no overflow: the better choice on GPUs that have it, A100/H100/H200). Losses and
# distances are computed in fp32 either way (modeling/losses/precision.py).
_C.SOLVER.AMP.DTYPE = "float16"
# DistributedDataParallel: gradient bucket size, and static_graph (True when every step uses the
# same parameters, which lets DDP overlap more; CLIP-ReID and the baselines do).
_C.SOLVER.DDP = CN()
_C.SOLVER.DDP.BUCKET_CAP_MB = 25
_C.SOLVER.DDP.STATIC_GRAPH = False
# Checkpoint every N epochs (and always at the end).
_C.SOLVER.CHECKPOINT_PERIOD = 10
# Periodic checkpoints kept per family (model_NNNN, model_stage1_NNNN); final ones are always kept.
# 0 = keep all.
_C.SOLVER.CHECKPOINT_MAX_KEEP = 2
_C.SOLVER.LOG_PERIOD_ITERS = 20

# ---------------------------------------------------------------------------------------------
# TRAINER
# ---------------------------------------------------------------------------------------------
_C.TRAINER = CN()
# Registered names in HOOK_REGISTRY of extra hooks, in order. They run after the LR scheduler
# and before the checkpointer and evaluation; a PhaseHook among them trains a phase of its own
# before the main loop (CLIP-ReID's base config names "CLIPReIDStage1Hook").
_C.TRAINER.HOOKS = ()

# ---------------------------------------------------------------------------------------------
# TEST
# ---------------------------------------------------------------------------------------------
_C.TEST = CN()
# Registered name in EVALUATOR_REGISTRY used for every test set.
_C.TEST.EVALUATOR = "ReidEvaluator"
# Evaluate every N epochs (0 = only at the end).
_C.TEST.EVAL_PERIOD = 10
# Global batch size at test time.
_C.TEST.IMS_PER_BATCH = 128
# Precision of the embeddings' forward pass: "float32", "float16" or "bfloat16" (autocast; the
# embeddings are returned in float32; float16 falls back to float32 on a CPU).
_C.TEST.PRECISION = "float32"
# "euclidean" (squared Euclidean, the reference) or "cosine" (1 - cosine similarity).
_C.TEST.METRIC = "euclidean"
# L2-normalise features before computing distances (the reference always does).
_C.TEST.FEAT_NORM = True
_C.TEST.CMC_RANKS = (1, 5, 10)
_C.TEST.MAX_RANK = 50
# Upper bound of host/GPU memory used by the distance/ranking chunks, in MiB.
_C.TEST.MEMORY_BUDGET_MB = 1024
_C.TEST.ROC = CN()
_C.TEST.ROC.ENABLED = False
# False-positive rates at which "TPR@FPR=<f>" is reported (pairs of query and kept gallery image).
_C.TEST.ROC.FPRS = (1e-4, 1e-3, 1e-2)
_C.TEST.FLIP = CN()
_C.TEST.FLIP.ENABLED = False
_C.TEST.AQE = CN()  # alpha query expansion
_C.TEST.AQE.ENABLED = False
_C.TEST.AQE.ALPHA = 3.0
_C.TEST.AQE.QE_TIME = 1
_C.TEST.AQE.QE_K = 5
_C.TEST.RERANK = CN()
_C.TEST.RERANK.ENABLED = False
_C.TEST.RERANK.K1 = 20
_C.TEST.RERANK.K2 = 6
_C.TEST.RERANK.LAMBDA = 0.3
# Save query/gallery features, ids and top-k rankings to OUTPUT_DIR for visualisation.
_C.TEST.SAVE_RESULTS = False
_C.TEST.SAVE_TOPK = 20
# Per-query results (OUTPUT_DIR/<dataset>_per_query.npz: AP, first-match rank, INP of every query)
# are always written. Optional extras, for tools/benchmark.py's report (each adds ranking work):
_C.TEST.PER_QUERY = CN()
# also keep the TOPK best gallery items of every query (0 = off)
_C.TEST.PER_QUERY.TOPK = 0
# also rank every query against each gallery camera alone (Rank-1 / mAP per camera pair)
_C.TEST.PER_QUERY.CAMERA_PAIRS = False
# VehicleID protocol: number of random gallery draws (averaged) and their seed.
_C.TEST.NUM_TRIALS = 10
_C.TEST.TRIAL_SEED = 1234

# ---------------------------------------------------------------------------------------------
# Misc
# ---------------------------------------------------------------------------------------------
_C.OUTPUT_DIR = "output"
# cuDNN picks the fastest convolution algorithms for the input shapes (speed, not bit-reproducible).
_C.CUDNN_BENCHMARK = True
# Bit-reproducible GPU runs: deterministic algorithms everywhere (slower; overrides CUDNN_BENCHMARK).
# The reference sets both cudnn.benchmark and cudnn.deterministic, so its runs are not reproducible.
_C.DETERMINISTIC = False
