"""What the official data sets consist of: file names, digests, folder layouts, download addresses, classes.

SHA-256 values (file and decompressed payload) were computed from the official releases of MNIST, Fashion-MNIST
and the CIFAR-10 binary batches. Elsewhere only MD5 is known and used: the archives' MD5s as their publishers
list them, and for the extracted CIFAR python batches the MD5s torchvision publishes. CIFAR-100's extracted binary
files and the class-name text files have no published digest; they are checked by structure only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .digests import FileSpec


@dataclass(frozen=True)
class Variant:
    """One on-disk form of a data set: loose files in a folder, or one archive read member by member.

    ``subdir`` is the folder the official release unpacks into (searched under each of the data set's folders,
    and the folder itself); for an archive, ``archive`` is the archive file and ``subdir`` the members' prefix.
    """

    kind: str                                  # "idx" | "cifar-bin" | "cifar-py" | "mat"
    splits: dict[str, tuple[FileSpec, ...]]    # split -> files it needs, in order
    subdir: str = ""
    meta: tuple[FileSpec, ...] = ()            # optional files (class names); never checksummed if no digest
    archive: FileSpec | None = None

    def files(self, split: str) -> tuple[FileSpec, ...]:
        return self.splits[split]


@dataclass(frozen=True)
class OfficialDataset:
    name: str
    folders: tuple[str, ...]                   # sub-folders of a search root that may hold it, most specific first
    variants: tuple[Variant, ...]              # in order of preference
    classes: tuple[str, ...]
    urls: tuple[str, ...]                      # base addresses, tried in order
    download: tuple[FileSpec, ...]             # what to fetch when nothing is found locally
    augment: bool
    known_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # of the official train split
    optional_splits: tuple[str, ...] = field(default=())


def _idx(prefix: str, sha: str, payload: str, size: int) -> FileSpec:
    return FileSpec(names=(prefix + ".gz", prefix), sha256=sha, payload_sha256=payload, size=size)


def _same(name: str, sha: str) -> FileSpec:
    return FileSpec(names=(name,), sha256=sha, payload_sha256=sha)


_MNIST_FILES = {
    "train": (_idx("train-images-idx3-ubyte", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                   "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016),
              _idx("train-labels-idx1-ubyte", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                   "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008)),
    "test": (_idx("t10k-images-idx3-ubyte", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                  "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016),
             _idx("t10k-labels-idx1-ubyte", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                  "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008)),
}

_FASHION_FILES = {
    "train": (_idx("train-images-idx3-ubyte", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                   "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016),
              _idx("train-labels-idx1-ubyte", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                   "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008)),
    "test": (_idx("t10k-images-idx3-ubyte", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                  "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016),
             _idx("t10k-labels-idx1-ubyte", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                  "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008)),
}

_CIFAR10_BIN = {
    "train": tuple(_same(f"data_batch_{i}.bin", h) for i, h in enumerate((
        "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
        "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
        "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
        "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
        "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add"), start=1)),
    "test": (_same("test_batch.bin", "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b"),),
}
_CIFAR10_PY = {
    "train": tuple(FileSpec(names=(f"data_batch_{i}",), md5=h) for i, h in enumerate((
        "c99cafc152244af753f735de768cd75f", "d4bba439e000b95fd0a9bffe97cbabec", "54ebc095f3ab1f0389bbae665268c751",
        "634d18415352ddfa80567beed471001a", "482c414d41f54cd18b22e5b47cb7c3cb"), start=1)),
    "test": (FileSpec(names=("test_batch",), md5="40351d587109b95175f43aff81a1287e"),),
}
_CIFAR10_PY_META = (FileSpec(names=("batches.meta",), md5="5ff9c542aee3614f3951f8cda6e48888"),)
# batches.meta.txt: the released file and common copies differ only in trailing blank lines, so it has no digest
_CIFAR10_BIN_META = (FileSpec(names=("batches.meta.txt",)),)

_CIFAR100_BIN = {"train": (FileSpec(names=("train.bin",)),), "test": (FileSpec(names=("test.bin",)),)}
_CIFAR100_BIN_META = (FileSpec(names=("fine_label_names.txt",)), FileSpec(names=("coarse_label_names.txt",)))
_CIFAR100_PY = {"train": (FileSpec(names=("train",), md5="16019d7e3df5f24257cddd939b257f8d"),),
                "test": (FileSpec(names=("test",), md5="f0ef6b0ae62326f3e7ffdfab6717acfc"),)}
_CIFAR100_PY_META = (FileSpec(names=("meta",), md5="7973b15100ade9c7d40fb424638fde48"),)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm")
CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2")
DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")

CIFAR10_BIN_ARCHIVE = FileSpec(names=("cifar-10-binary.tar.gz",), md5="c32a1d4ab5d03f1284b67883e8d87530")
CIFAR10_PY_ARCHIVE = FileSpec(names=("cifar-10-python.tar.gz",), md5="c58f30108f718f92721af3b95e74349a")
CIFAR100_BIN_ARCHIVE = FileSpec(names=("cifar-100-binary.tar.gz",), md5="03b5dce01913d631647c71ecec9e9cb8")
CIFAR100_PY_ARCHIVE = FileSpec(names=("cifar-100-python.tar.gz",), md5="eb9058c3a382ffc7106e4002c42a8d85")

_SVHN = {"train": (FileSpec(names=("train_32x32.mat",), md5="e26dedcc434d2e4c54c9b2d4a06d8373"),),
         "test": (FileSpec(names=("test_32x32.mat",), md5="eb5a983be6a315427106f1b164d9cef3"),),
         "extra": (FileSpec(names=("extra_32x32.mat",), md5="a93ce644f1a588dc4d68dda5feec44a7"),)}

OFFICIAL: dict[str, OfficialDataset] = {
    "mnist": OfficialDataset(
        name="mnist", folders=("mnist", "MNIST/raw", "MNIST"),
        variants=(Variant("idx", _MNIST_FILES),), classes=DIGIT_CLASSES,
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://yann.lecun.com/exdb/mnist/"),
        download=_MNIST_FILES["train"] + _MNIST_FILES["test"], augment=False,
        known_stats=((0.1306604762738429,), (0.30810780385646264,))),
    "fashion-mnist": OfficialDataset(
        name="fashion-mnist", folders=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST"),
        variants=(Variant("idx", _FASHION_FILES),), classes=FASHION_CLASSES,
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        download=_FASHION_FILES["train"] + _FASHION_FILES["test"], augment=False,
        known_stats=((0.2860405969887955,), (0.3530242445149226,))),
    "cifar10": OfficialDataset(
        name="cifar10", folders=("cifar10", "cifar-10", "CIFAR10"),
        variants=(Variant("cifar-bin", _CIFAR10_BIN, subdir="cifar-10-batches-bin", meta=_CIFAR10_BIN_META),
                  Variant("cifar-py", _CIFAR10_PY, subdir="cifar-10-batches-py", meta=_CIFAR10_PY_META),
                  Variant("cifar-bin", _CIFAR10_BIN, subdir="cifar-10-batches-bin", meta=_CIFAR10_BIN_META,
                          archive=CIFAR10_BIN_ARCHIVE),
                  Variant("cifar-py", _CIFAR10_PY, subdir="cifar-10-batches-py", meta=_CIFAR10_PY_META,
                          archive=CIFAR10_PY_ARCHIVE)),
        classes=CIFAR10_CLASSES, urls=("https://www.cs.toronto.edu/~kriz/",), download=(CIFAR10_BIN_ARCHIVE,),
        augment=True,
        known_stats=((0.49139967861519607, 0.48215840839460783, 0.44653091444546567),
                     (0.24703223246328201, 0.24348512800005553, 0.26158784172796445))),
    "cifar100": OfficialDataset(
        name="cifar100", folders=("cifar100", "cifar-100", "CIFAR100"),
        variants=(Variant("cifar-bin", _CIFAR100_BIN, subdir="cifar-100-binary", meta=_CIFAR100_BIN_META),
                  Variant("cifar-py", _CIFAR100_PY, subdir="cifar-100-python", meta=_CIFAR100_PY_META),
                  Variant("cifar-bin", _CIFAR100_BIN, subdir="cifar-100-binary", meta=_CIFAR100_BIN_META,
                          archive=CIFAR100_BIN_ARCHIVE),
                  Variant("cifar-py", _CIFAR100_PY, subdir="cifar-100-python", meta=_CIFAR100_PY_META,
                          archive=CIFAR100_PY_ARCHIVE)),
        classes=CIFAR100_CLASSES, urls=("https://www.cs.toronto.edu/~kriz/",), download=(CIFAR100_PY_ARCHIVE,),
        augment=True),
    "svhn": OfficialDataset(
        name="svhn", folders=("svhn", "SVHN"), variants=(Variant("mat", _SVHN),), classes=DIGIT_CLASSES,
        urls=("http://ufldl.stanford.edu/housenumbers/",), download=_SVHN["train"] + _SVHN["test"], augment=False,
        optional_splits=("extra",)),
}
