"""The paper's benchmark data, downloaded from its public sources into ``resources/eval`` (``DOWNLOAD_DIR``)
in the layout the evaluation modules read (``selectit.evaluation``; see configs/paper.yaml), each file checked
against its sha256 and written atomically: a file under its final name is always the pinned one.

``FILES`` is the table (benchmark, path under the folder, URL, sha256): GitHub raw files at pinned commits
(the sources and commits of the copies in ../shared/data, listed in its SOURCES.md, whose SHA256SUMS give the
hashes), and one unpinned official file, TyDiQA GoldP dev, whose content is pinned by its hash alone.
``fetch`` downloads one file with ``urllib.request``; with a ``mirror`` (``evaluation.download.mirror``: a
local folder, or a ``file://`` / ``http(s)://`` base, in the same layout) it reads ``<mirror>/<path>``
instead of the URL, so a cluster without internet, or a test, can use a local copy; the hash check is the same.
The workflow's ``download_eval_file`` rule (rules/resources.smk) runs ``fetch`` for each file an evaluation
reads when ``evaluation.data_dir`` is ``resources/eval``.
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from selectit.atomic import atomic_path
from selectit.atomic import sha256_file as sha256_of
from selectit.errors import InputError
from selectit.evaluation import check_benchmarks

#: The folder the download rule fills; ``evaluation.data_dir: resources/eval`` makes the evaluations read it.
DOWNLOAD_DIR = "resources/eval"

# (repository, commit) of each source, as SOURCES.md names them.
GSM8K = ("openai/grade-school-math", "3101c7d5072418e28b9008a6636bde82a006892c")
BBH = ("suzgunmirac/BIG-Bench-Hard", "9ee07bd481feebf959a6b59d61ea57bdcf30964d")
TAGCOS = ("2003pro/TAGCOS", "93a5a38681323e21aa9b6d503674bef814d7916c")  # MMLU CSVs, TyDiQA one-shot
HUMAN_EVAL = ("openai/human-eval", "6d43fb980f9fee3c892a914eda09951f772ad10d")
ALPACA_EVAL = ("tatsu-lab/alpaca_eval", "cd543a149df89434d8a54582c0151c0b945c3d20")
# TyDiQA GoldP dev: SOURCES.md has no copy and no pin (every copy is over the snapshots' 4 MiB). This is the
# official file open-instruct's scripts/prepare_eval_data.sh downloads; Google's bucket has no revisions, so
# what pins it is the sha256 (and size, 5617409 bytes) that tensorflow/datasets records for this URL in
# tensorflow_datasets/url_checksums/tydi_qa.txt @ 02606185e5c302bbcb9f7a2a5546aaa897d3fba0.
TYDIQA_GOLDP_DEV_URL = "https://storage.googleapis.com/tydiqa/v1.1/tydiqa-goldp-v1.1-dev.json"
TYDIQA_GOLDP_DEV_SHA256 = "b286e0f34bc7f52259359989716f369b160565bd12ad8f3a3e311f9b0dbad1c0"


def github_raw(source: tuple[str, str], path: str) -> str:
    """The URL of ``path`` in a GitHub repository at a commit: ``source`` = (owner/name, commit)."""
    repo, commit = source
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


@dataclass(frozen=True)
class ResourceFile:
    benchmark: str  # a key of selectit.evaluation.BENCHMARKS
    path: str  # under the download folder (in its benchmark's data_subdir), as the benchmark's module reads it
    url: str
    sha256: str


_MMLU = {  # subject: (mmlu/dev/<subject>_dev.csv, mmlu/test/<subject>_test.csv)
    "abstract_algebra": ("bd8c73f3c75bea9db82d281d9da6949cea687b987dba24a142c638e758046624",
                        "4be89c0fb1d2419722e88880f6da3da95750367185ecd36f6492a6f74785cf64"),
    "anatomy": ("0985685cf5ab13ccc1629f03a1308a9add8767582ffeb195b68b18c3415c9993",
               "966dfd5c4579885ebdb8c05d6754ae5834f672632586d8595be3c0f9360e6f4e"),
    "astronomy": ("bb03eca519a3fbc04017dc4783635763ac928f0811ce6243dbcbf0d526dbe1e3",
                 "87c9c3cb5a55395c70dd9ed521dd7d2629fd4ff236c5ab647102e007f52a9341"),
    "business_ethics": ("7cd487e4ba7d9fe423bcc259ad852e963dc370629b8d61881b61ed0ae84c0b46",
                       "cd3fc3a85a34cb17e6c5b2fb68ea61e7800b31120d92934019f1e17f4832fbd4"),
    "clinical_knowledge": ("13c88c266cf2a8aa20a062e9b901ee372431e75669fa3c80865613fa2b7f61af",
                          "06a1ea973000d5ef5d2664c4ac1c68d0423f1cab6b3b682be7942633740811f1"),
    "college_biology": ("31f4ae0707ba3f742e0d5546ff970949be8a05e217921fe87b1814d6a0ab8184",
                       "e1204cb9d19887ea266145f038b5d4cc1fbc33d7efce186259c4ecca1cbe3119"),
    "college_chemistry": ("9ba27ba571b8ad40d35a2a88a60acf434ca5f37962c2eba8f9d0aa89edb4c1c7",
                         "4d61d7887f845b887c52ac928b6dffdcf2468d79f3d0fbb4d1731092a51d2552"),
    "college_computer_science": ("fc1a43187cd68390d663e0a1849688b13a4cd75ab17616558f4e584a4a8ae2bd",
                                "d53a1d0d1c4362dacf92a4ff1d6a755beb5a87f24a7301c3c4391fcacc6530b4"),
    "college_mathematics": ("27731ee1402e720ee01ad6fa6a969a0d0978a0e9b4c385d328a61869a43f321f",
                           "8b5bef14d4209c7918eaf947e4f12a5ae9470567722d8ba9761302d733e8ac71"),
    "college_medicine": ("63928a944fda769d7e52a3a4549d4f37f094896e65e7db35029261e1ae79909b",
                        "9c533cfff89edaa317b2e79bbabcdd5e2e522e019679cb4a6475e5f2a1861b1e"),
    "college_physics": ("6e043d6c566091c5ad1d8bc1d002900e1aa0bff114f98d5e3f2e4f645efce100",
                       "079c3696eda22c13b0472de245c7bb4918315b59481964109a4f65d2a35b4243"),
    "computer_security": ("09e276300dbd2d07906dbe4ff82aabf45b9765f933eb7d0f35ea3ea97dee8020",
                         "8e40f809858db9dd8585036b53984e570b6101f72be2214b85e979c7fafa307f"),
    "conceptual_physics": ("5e65be1f6fdd82f4887e3747af790a747191b1b732dd2bea76306388d5ee3719",
                          "7b39a241bb20424fd2a4e0e37ce05d94865ffc44191d8be4063be0e973312256"),
    "econometrics": ("7a01a925199c246decd0f1fc7a1b8dc28136b19d793e5b1e0d97142c118a2940",
                    "10eb6b2d3a519a463872ef75902991b51ebf45865b29888e86d40228ace24029"),
    "electrical_engineering": ("5aad11b1d1c8dc1a431c3e79a047cba56d691a60403ddffaf5fbd45e9c82bc0d",
                              "8b0d747a97cb2cbbd8926c8deb2cda6073da6d5d3cc099693aa7761be938f5e4"),
    "elementary_mathematics": ("9aca9cd215b7c170020fd5f7db1c9c3d5cbf6df9ee7b970a4810649a87245011",
                              "65a46a0e1927ea37aabd031ddcb6d81eef70a7eee1e9e0af94ec8e3fa21d728b"),
    "formal_logic": ("e4b579358ed4878f6c91bfea0ccc51efdd15a28401f86da9ee8f6c0af37cf36d",
                    "bc2dc7373a664ae72e166dcbe3f7aaf1bb65b99f106f1831f335c53467f35248"),
    "global_facts": ("685577fc3f0bf09a3f5c741ef062d6328aec843069862b83b64eb3638466505f",
                    "a81058ee8e2385edaf42b8847ec9db01221fa4b16d262db415f3370884745ff9"),
    "high_school_biology": ("6a200085c150794846d4bab43bb0e22ceec9f99576dfc25f5c5d8faa9595ae13",
                           "cfaba2b58b9714d2a6983a90bce17f14cc44cfc8195b20f8f65fef70d21331b9"),
    "high_school_chemistry": ("1ba44aeea98ca22342b6525a3a9ebb62003b2a8289fa42d7c844e2139557ec5b",
                             "0e3d94da331d1eb3cafecd64a6f0f64e6fd2410b0a76676b2c0728dc5c1374f5"),
    "high_school_computer_science": ("5de3800dfbbfaa89050413a765deaf774fdb0611e370951383fb50fac774663e",
                                    "63806168fb0e5a72fe5bfb880f19816d8997e28d3f312c6b1831f4d40f432059"),
    "high_school_european_history": ("a3677065cf51abc32901cdcf88ed64121f5595e3a5a67f86ae2570f866fe87c5",
                                    "09983655452c3c40ba466050ec82252f02a235e5946734f4d73b73688fc9509b"),
    "high_school_geography": ("e43fc27b9fa8b808773a2871007b39e012a1cc1ec902f85d85cc9c27cc12883d",
                             "c6acdaa9d94c88cdefb9dd569e376733d9ba670c07db12cdff36ccdc18c2ab0c"),
    "high_school_government_and_politics": ("daf013a3eae04b5904e6a706cf0574df2c881e00d46a979cb34c6e2968ad1c90",
                                           "fbd7a89eb2c7806097e18b40950e44e0580e6f97cd151f01a216bb575c2d7903"),
    "high_school_macroeconomics": ("23ed995071c47e627c4e6adbce63a9144920441abb7e69f8b4dfac5fdc4e402d",
                                  "354b12cc74d2806c44d1fea42efba04ec12f10233e5169466080a1d1a6f8bba5"),
    "high_school_mathematics": ("d7401d5cbad5ae697bfa480e35d85de8ebf1232589a3c59b010782ee49cbe18c",
                               "fe8f7a154834bba30947401ba37ea6c7afdcfba82ddc341c79b5d3016991d290"),
    "high_school_microeconomics": ("a409b422561f1fb02e6d1bc044657cfff7779b13146edfd937d2573423c2c49b",
                                  "a250cc4976654e479cecdb7b66046ce2412df3e5e1b9c3d145ed344eae9a2256"),
    "high_school_physics": ("5f008c3a44e7b14d86f6c1cbde28892fd0d97ae424e8af9901d75c4ee03972cc",
                           "573e0f8d8309e4669f53a4b13248a908507b6d5d4c97c977f7bb9814658fee54"),
    "high_school_psychology": ("b39b304a436fa6239a4bb8c1dc4ca3693edec2876926851f3d512d1da9e280ab",
                              "88c33b6b0ade567d07b8b5b074effdb52f31d773541fd71e86cb0d85a8daf7bf"),
    "high_school_statistics": ("9441f8da50bfb93158d9b2645909cf1bc5837e8078c0eab923cf0fe761f7754e",
                              "d62843d2fd084d6af1c8a0a6491d0aa642c34a7a68476605b9b3db5841e63d3f"),
    "high_school_us_history": ("028b3c81c7be1138ad50b4afa1835773788e4557426a40abfaf132b11edab541",
                              "0338dea3b11881be53c2208ae8dbb571c792c0dca6f0b36a352147c0be81625e"),
    "high_school_world_history": ("b6e87a14718b0415241dfe10dd86605de5b6e5995fa57580e9e2d7c56fe147a1",
                                 "7787343ae18e4e1ef833c8630c0c914c62f42c2f35d8b90f4bec2eecccfc161e"),
    "human_aging": ("d2439fb3c2292e7dca8244cd98dd7ca746f8424347f171345f6b396f568b0870",
                   "01299d7e0ae4a8d082daeecc140445ce7393b464040bd810b0a60a370ae5502e"),
    "human_sexuality": ("0da7f8f7aeb6d5a08f0413489aa5d5b84ff8ac971952ea66242762f779cb6794",
                       "43ca779587725f126d07733b33ba339ce27cca6f85056872eccf4b0377e28a90"),
    "international_law": ("6f7f1c0191c0bcfe195d0ed39942a605012967a04d855c6482dc7e7a9f95e4d8",
                         "51b3a6d74cc84651b2355d2823c30d993015ddfe8ef39725da4e0442f29489fc"),
    "jurisprudence": ("27533d974102031088bc5c47fc008538ab3d08ca75e127fb64ff04cdd1562da2",
                     "bf7a770aebfbdb181abc2c26ffd7a01ab31f93c7e2dfe6924c57c7bca4a0dff6"),
    "logical_fallacies": ("4de026c2d116c381dcc1b65e91a28ba3d124398f920b0f3904ec5b641deb28f4",
                         "3fe8b48c74832525556455d49960cc0c3cff37496783348043ff69a1863c2244"),
    "machine_learning": ("e4b1b09985dbdc499d51a2a2e83d93ae05bfe72ea7407c18e3aa3d2ab9ce7517",
                        "05984b90f887a7da12b3dd8e41e6c34fa856b2c939ea3124975d90910ceb2af0"),
    "management": ("f75224958ab245d86c335d6886f8689247a9f83691ad63bb7ef3196641be9e52",
                  "4a535a11bb480a09a302e86d157ae2d33e054cfa00e4265fe300a9408b87ec6b"),
    "marketing": ("15b3cf450ebc11e122886a5bad41e78260228259fa184eaa4ba566bdf37f0315",
                 "ecf0ae0ae906194d033ca7d7746eaf201232eccb78ee24147e737473f751233d"),
    "medical_genetics": ("70cd9ff940bef360693eeb4e05b5b8e53ad75a81d6b74a784222d4cae6dcb896",
                        "cc30c698e94f12c00e610a39c62d1a1d9587fa53c005359317346081f722c5e6"),
    "miscellaneous": ("72f74676c37fe477720d8b55e84517bd21daf1fe24f99dd33f1b0a636d31782e",
                     "061b283bb264072321d848b3b7f409a932a11ffa023fc94898dd31d2a4c80c7e"),
    "moral_disputes": ("c80d35650189d23777fff1a4a53ff4387128c2536cbbd417d7e9103eeeb0d054",
                      "673f5e9054f55fc5e165a3ed01e1b13eb1ee5a3405055818b50532e05de9bfdd"),
    "moral_scenarios": ("dbe2196287f89a6c4be4f31a1897bf0d0f8612a5ab22451a856496df2e0c5100",
                       "128d7bd823d793f8b7faf28f98f4b3c737b3e84d4b42c06c13458d36075a423a"),
    "nutrition": ("84444f3a5c5bf3ccbe87f361b8dca56b9e0c5594fda2c4b558c66c37f47f5b24",
                 "309432be237ac2b659acd10fdd4347d32cdc60aa9daeafbac78486a8744fa0b6"),
    "philosophy": ("587be220837bbe089702aa27cda03fbf72a7b959a9a4425e70d598026614cf11",
                  "a0f0c6fc9e4f08c04ff3a339996c4ed688a9fbe75d205fff4b9d3549fb49fa1e"),
    "prehistory": ("f62e146bc64a3335bafde9af63b43e4a863246da743cd49f6daf5d5e9614ff81",
                  "8d44938332ea3d199cfa51a18ef69af972aa33ca4af7b5f5bc62e768a31f949a"),
    "professional_accounting": ("efc070ed71676829c67497542e3571f50a868036a17f93d00a56a4f85767ae0d",
                               "27071efa2f8fd8502d01e80b8d7c69439586019f59e416ce039968417ef41355"),
    "professional_law": ("15d8589900ccf4725e1bad17837d48cc18c8bf033cd9b5d6bacf28a2a8f1064f",
                        "eeb81cac576a5f537485b6befd25837b55f64b57e9b2a7e409210d7c8d608820"),
    "professional_medicine": ("486456d578890d4700dd8044ac236c8ac2ee3389e35fc81ac37529f4f4487785",
                             "a034bf0dda10cb0848bdd3097eb1547d61ca2dac9e9b871563691621c38d51e9"),
    "professional_psychology": ("222e690db42dfb217a7c56a6ac693b73cf0168e344d75f28618c62ad9d2c0261",
                               "99785591dfe18717736c0c296c9d9840c832f98749060975f7e2d976ad204bf7"),
    "public_relations": ("8895f665f4c696ae76d34210546d0ab4b21b79d2fd8534cd2e8002e8ed0969dc",
                        "3712f955d0c38b073b188a175a8d9a6ce64601f0ae9c98d8cfc37461c4cb5933"),
    "security_studies": ("c726278f37ce15489b22190771041bd459065016e3891148ef147ae7cf1a0c35",
                        "ab7634702670ee0d5e98b852f5bcfad2821ff9a2e909d223de05422c948f6638"),
    "sociology": ("2e2bb34b4cabdc50e2c43097d1cfe91560224f9e1224adc19a01e922d1c49414",
                 "f6c464600032aa2bb53294ad53217fbb650601eee206af947b3ce4c587ff5bed"),
    "us_foreign_policy": ("3a9677a89fd67c3a891671a2a6a14ff69ab37bdd54fb687c2f8334c8a3fa1543",
                         "2821ee009a2b1b7d4adc5a212a0bad7fe05d377455de0fe0841beab8f00142e1"),
    "virology": ("30af41f604f2ee7f5585361df6a7022b4eaf126eeb91494f225841908f06034a",
                "4355b9d79142da0e44a767a495a277733fd89ad67236cbbe3f42ff3a6d46b483"),
    "world_religions": ("d4f7550bb8a32a599dc2ffa0a53e85e81096f441bcca1be3a412d690ade8eaa0",
                       "3be96b2465419289c4fe0c8a0d003003facd243c8982c6daafc6ac90a40bd507"),
}
_BBH = {  # task: (bbh/bbh/<task>.json, bbh/cot-prompts/<task>.txt)
    "boolean_expressions": ("ea6c754ec005e2d3f2d085d349a740f593b5764f32ea4638ffed4cfc0061b12a",
                           "685affba97425cdf3549d5d313ba876caed2fa7c8a4cf1ea7549faf22179609d"),
    "causal_judgement": ("6e8bca44dd402008ed41c07a3d0a1d5e7b03db7001a7e002fcdf4c60985ea081",
                        "14377e36cccb084b7d0fe73988d08696f7675d712b02d3ae1f5f7f12c77028ea"),
    "date_understanding": ("0148d4ac5fca05b2f82373e5fef7208e15363b9c6079493034d77b3dab496bf5",
                          "a0a13c392f689a1828f5f6ffb9dee3d44483794490da5d92f0e2a723787b1cfb"),
    "disambiguation_qa": ("cf06df9ebf911b883671cb1b35d3fbd1a1c306b19b9e9a012407e596c85fe8c6",
                         "794fd259297972a4c963a5d13a84dc221edde460de27fa5d8fd64299a2001597"),
    "dyck_languages": ("3f9badedf15c2be1ce53d94fdf016299bb30ba231ef087ab9f51a7ed6d0bdc25",
                      "b0836603007ec659ed685458647fb6d7543543304e7aca909b995d0c3aff22b2"),
    "formal_fallacies": ("4c1adb664821157faade1d4153685403afcc02648f3c180a608a18f17f589629",
                        "10c06cc362520e9b8dddfc4861e263ff668d228a52d958dcc69f09f1d224935a"),
    "geometric_shapes": ("07be68a124420caa2ebc0b2c858ad79fc55c5c8806170e496e1e17ebfb11f31c",
                        "f36d9893507eb518d84f388fb677dc0226c74a98873700de0b556548d65d3f76"),
    "hyperbaton": ("b6d7f55c75f5d02f2987a4f3123802dfa093872089a56a334144aae8a7264fdc",
                  "19898af91c35cb26bbdf5fdb6f6fb17e138677250332e2994005625ffb50b261"),
    "logical_deduction_five_objects": ("d2df31394b903b7f0e085d42a69572a092987856eac076799017d70ef266fa8f",
                                      "4ed65246c0c1c4b0b4053d784181892b842bce19cf4358c976f34b1a434ef034"),
    "logical_deduction_seven_objects": ("2896c7e3482eea318dd37bcc370d24ec3cc91e8374c1784287b5dbd38a529e33",
                                       "4ed65246c0c1c4b0b4053d784181892b842bce19cf4358c976f34b1a434ef034"),
    "logical_deduction_three_objects": ("e590fae72e3a6041fbd23bd8ff6b74baf44ca563f6ba40a041c55e7b867c1681",
                                       "4ed65246c0c1c4b0b4053d784181892b842bce19cf4358c976f34b1a434ef034"),
    "movie_recommendation": ("a8b53a87ee21a865b7248e694f388a9b8f7cf6b839b11d44796a2dd3fc088983",
                            "cdf765634713b057091d541b4773dd2c998f81447b0bd8564ae70be4cdf3f5d0"),
    "multistep_arithmetic_two": ("c9d5a6433c9b78256422a15c78463949c8bec8d85607aa28b52d7234ad4a8595",
                                "a546e0b7cde09037bc144ae5c32c9cf78dafdfac929ae76e2051b2dd8f3671ce"),
    "navigate": ("b7944dfd3c81da5c4815bd75b00d6fa3c64140823498e78ed496f4c3d36f7f0d",
                "dc2fd733f1867b8c79685f15b83746064534a94bf73468341c2a9dd335be22fc"),
    "object_counting": ("8acef14dbbdd40d2326ef7755750b6b5fe919fef06276af1bab3f1c297f022ff",
                       "e51ffc03fd713a13a379a6c938a523dfc1c2f384f2a8447bd7a12d4458f18833"),
    "penguins_in_a_table": ("bb87ee449698eee51215e025a453b1bcb2f5e6589c2063b2c79e68b8f0655228",
                           "33be137e76c2a6af0bbacd17a8e7a92801886c0202a45e35ea9c2a88c1f26d51"),
    "reasoning_about_colored_objects": ("0a8850cf95166020fce7a78244026ceedd7ea839302471512b4f8744e85a6a49",
                                       "e4ea02d05b13e8ed9ccc3b0d878bc4df4c5a6fb76c65d39d48d6244f7ff0b9d5"),
    "ruin_names": ("b6f723aef2bafdd4c7bfc3c7e0329c7e8a8279391a609969c8ed76c9319f5f7f",
                  "731446c6c66bb5258677af1417b599a6a5539be6d74a5afc02cf7a716444ea54"),
    "salient_translation_error_detection": ("becf3eb8dd53c821a555ecd5c1334ecd93eb25f980e63be963c518e7138de5da",
                                           "2c8367f75092202cc507fdbfaaf037b1c1eed38e91289084439738367f0785f7"),
    "snarks": ("54a0661fe2de06167645a4965e6bcf963c4ba307e76262a7c750998b0e3d0d0e",
              "35084a2a0b86bc4008ab206b838c0b97dd425897dd72198137c3cefc499c0960"),
    "sports_understanding": ("63ca262858f6176864515cd8cf53cdaa40839ebecc155b726d77930855d167bf",
                            "2058a9bed717a6edb8ca2f815e88851436a4ee14c8b0d504ccf464865c6d0295"),
    "temporal_sequences": ("92a1189faaa84aacc4c405aaa13f13f48c2992eb884772eedb622505252baef5",
                          "3e7ebf1e20abe3e219dc6514dcb7474d82db1b2c66acc733cd30af2e9e0b64b0"),
    "tracking_shuffled_objects_five_objects": ("2063a46a4fb484236ed4310523606543a3e1dd4a4dc34eda65d407910ece25a5",
                                              "2ef54cb2a72052adc3484a76209cb6a6535f194d677e79bcec2e2e71cf3768af"),
    "tracking_shuffled_objects_seven_objects": ("b59fd05b850c37cf57cb514ae1e6975c00b1638ade2291722056b2af3c54084d",
                                               "2ef54cb2a72052adc3484a76209cb6a6535f194d677e79bcec2e2e71cf3768af"),
    "tracking_shuffled_objects_three_objects": ("546cc7bf10c6a01a6a4c17ae28a4966485f21f29fd5d111f37858ec78e354f6b",
                                               "2ef54cb2a72052adc3484a76209cb6a6535f194d677e79bcec2e2e71cf3768af"),
    "web_of_lies": ("3e60323f8514a107fdb4edf35f8832a9171c5a09c0eaa47823559de905e8ab8b",
                   "c8025ca65ab7f0897c243504c863bda043d04b6e873777536743e94023c929d0"),
    "word_sorting": ("2a6132d2c99f00d0d2eb1113ac6b4a918bd969d863c48749210d969713db8d43",
                    "a2cdbcfe23abaa97b9787f7c03dbf49b1cfd0ff9e63197b7884bb5cd5a096ca6"),
}


def _table() -> tuple[ResourceFile, ...]:
    rows = [
        ResourceFile("gsm", "gsm8k/test.jsonl", github_raw(GSM8K, "grade_school_math/data/test.jsonl"),
                     "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
        ResourceFile("tydiqa", "tydiqa/tydiqa-goldp-v1.1-dev.json", TYDIQA_GOLDP_DEV_URL, TYDIQA_GOLDP_DEV_SHA256),
        ResourceFile("tydiqa", "tydiqa/tydiqa-one-shot.json",
                     github_raw(TAGCOS, "data/eval/tydiqa/dev/tydiqa-one-shot.json"),
                     "cf10d4d6ceb1fc25539116990e7b236ffa69f9b5cc5938258b5836c42e2d02f1"),
        ResourceFile("codex", "humaneval/HumanEval.jsonl.gz", github_raw(HUMAN_EVAL, "data/HumanEval.jsonl.gz"),
                     "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"),
        ResourceFile("alpaca_eval", "alpaca_eval/text_davinci_003/model_outputs.json",  # AlpacaEval 1.0 references
                     github_raw(ALPACA_EVAL, "results/text_davinci_003/model_outputs.json"),
                     "af0bc112f08c88bf589bbfe6fc1036806d0a0f6fec9c4d5a4db860f5afe73b4b"),
    ]
    for subject, (dev, test) in _MMLU.items():
        for split, sha in (("dev", dev), ("test", test)):
            name = f"{split}/{subject}_{split}.csv"
            rows.append(ResourceFile("mmlu", f"mmlu/{name}", github_raw(TAGCOS, f"data/eval/mmlu/{name}"), sha))
    for task, (examples, prompt) in _BBH.items():
        rows.append(ResourceFile("bbh", f"bbh/bbh/{task}.json", github_raw(BBH, f"bbh/{task}.json"), examples))
        rows.append(ResourceFile("bbh", f"bbh/cot-prompts/{task}.txt", github_raw(BBH, f"cot-prompts/{task}.txt"),
                                 prompt))
    return tuple(sorted(rows, key=lambda r: (r.benchmark, r.path)))


#: Every file the download rule can fetch, by benchmark then path.
FILES: tuple[ResourceFile, ...] = _table()
_BY_PATH = {f.path: f for f in FILES}


def files_for(benchmarks: Iterable[str], key: str = "config evaluation.benchmarks") -> list[ResourceFile]:
    """The files of ``benchmarks`` (InputError naming ``key``, where the names come from, for a name outside
    the registry ``selectit.evaluation.BENCHMARKS`` or a benchmark this table has no files for)."""
    benchmarks = list(benchmarks)
    check_benchmarks(benchmarks, key)
    known = {f.benchmark for f in FILES}
    unknown = sorted(set(benchmarks) - known)
    if unknown:
        raise InputError(f"{key}: no download source for benchmark(s) {unknown}; known: {sorted(known)}")
    return [f for f in FILES if f.benchmark in benchmarks]


def entry(path: str) -> ResourceFile:
    """The table row of ``path`` (relative to the download folder)."""
    try:
        return _BY_PATH[path]
    except KeyError:
        raise InputError(f"{path} is not a file of the benchmark download table (selectit.resources.FILES)") from None


def is_download_dir(data_dir: str | Path) -> bool:
    """Whether ``data_dir`` is the download folder (relative to the current directory, the workflow's)."""
    return Path(data_dir).resolve() == Path(DOWNLOAD_DIR).resolve()


def source_url(item: ResourceFile, mirror: str | Path | None = None) -> str:
    """Where ``item`` is read from: its URL, or ``<mirror>/<path>`` (a URL base, or a local folder)."""
    if not mirror:
        return item.url
    mirror = str(mirror)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", mirror):
        return f"{mirror.rstrip('/')}/{item.path}"
    return (Path(mirror).resolve() / item.path).as_uri()




def fetch(item: ResourceFile, dest: str | Path, mirror: str | Path | None = None, timeout: float = 120.0) -> Path:
    """Download ``item`` to ``dest``; InputError naming the file (and the expected and actual sha256 when
    the content differs) when it cannot be had, and then nothing is left at ``dest`` or beside it."""
    dest = Path(dest)
    url = source_url(item, mirror)
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "selectit-pipeline"})
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError) as exc:
            raise InputError(f"cannot download {item.path} from {url}: {exc}") from None
        if digest.hexdigest() != item.sha256:
            raise InputError(f"{item.path} from {url} has sha256 {digest.hexdigest()}, expected {item.sha256} "
                             f"(selectit.resources.FILES); it was not written to {dest}")
    return dest


def download(root: str | Path, benchmarks: Iterable[str], mirror: str | Path | None = None) -> list[Path]:
    """Every file of ``benchmarks`` under ``root``; a file already there with the pinned hash is kept, any
    other is (re)downloaded."""
    paths = []
    for item in files_for(benchmarks):
        dest = Path(root) / item.path
        if not (dest.is_file() and sha256_of(dest) == item.sha256):
            fetch(item, dest, mirror)
        paths.append(dest)
    return paths
