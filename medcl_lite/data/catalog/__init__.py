"""Real datasets: where to get them, their terms, and how to turn them into prepared folders.

``CATALOG`` maps a name to a :class:`DatasetEntry`. Public datasets are downloaded (sha256
checked, :mod:`medcl_lite.data.download`) into ``data_home()/raw/<name>/`` and prepared into
``data_home()/prepared/<name>-<size>/`` by :func:`download`; datasets behind a registration are
downloaded by the user, checked in place with :func:`check` and converted with :func:`prepare`.
Every prepared folder has the format of :mod:`medcl_lite.data.prepared`, read back with
``read_prepared``. The built-in phantoms need no download (``medcl data phantoms``).
"""

from __future__ import annotations

import difflib
import inspect
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medcl_lite.data.catalog import abdomen, folder, pools, reports, volumes, xray
from medcl_lite.data.download import RemoteFile, data_home, extract, fetch
from medcl_lite.data.prepared import is_complete, write_prepared

__all__ = [
    "CATALOG",
    "DatasetEntry",
    "check",
    "describe",
    "download",
    "get_entry",
    "list_datasets",
    "prepare",
    "prepared_parts",
]

_ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class DatasetEntry:
    """One real dataset (or ``folder``: the user's own, in a generic layout).

    Attributes:
        name: catalog key, used on the command line.
        title: one line for ``medcl data list``.
        modality: ``"xray"`` (chest radiographs), ``"mri"`` or ``"ct"`` (volumes), ``"any"``.
        access: ``"public"`` (no registration; downloaded here when ``files`` pins it, else by
            hand), ``"registration"`` (the user registers and downloads it) or ``"local"`` (the
            user's own folder).
        licence: terms of use, in short; the homepage has the full text.
        citation: what to cite when using it.
        homepage: where to read about it and register.
        files: pinned downloads (public entries only).
        instructions: how to get it and the folder layout :func:`check` expects.
        labels: what the prepared masks hold.
        scan: ``scan(source) -> Scan`` (layout check).
        prepare: ``prepare(source, size=..., progress=..., **options) -> SliceSet``, or a dict
            folder suffix -> SliceSet when it writes several folders (``folder``: the labelled
            set at ``OUT`` and the pretraining pool at ``OUT-pool``).
    """

    name: str
    title: str
    modality: str
    access: str
    licence: str
    citation: str
    homepage: str
    files: tuple[RemoteFile, ...]
    instructions: str
    labels: str
    scan: Callable
    prepare: Callable


_JAEGER_2014 = (
    "Jaeger S, Candemir S, Antani S, Wang YX, Lu PX, Thoma G. Two public chest X-ray datasets for"
    " computer-aided screening of pulmonary diseases. Quant Imaging Med Surg 2014;4(6):475-477."
)
_NLM_TERMS = (
    "NLM terms (see the set's README): free for research, cite the publications, do not"
    " redistribute the data set (forward requests to NLM)"
)
_POOL_OPTIONS = (
    "Options (-o KEY=VALUE): views=[PA] (add AP for portable films), min_times=2 (time points per"
    " patient), max_patients=1000 (null: all; the resized images are held in memory),"
    " allow_missing=false (true: prepare from the images present)."
)

CATALOG: dict[str, DatasetEntry] = {
    entry.name: entry
    for entry in (
        DatasetEntry(
            name="montgomery",
            title="Montgomery County chest X-rays: 138 PA images, right/left lung masks",
            modality="xray",
            access="public",
            licence=_NLM_TERMS,
            citation=_JAEGER_2014
            + " Candemir S et al. Lung segmentation in chest radiographs using anatomical atlases"
            " with nonrigid registration. IEEE TMI 2014;33(2):577-590.",
            homepage="https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets",
            files=(
                RemoteFile(
                    name="NLM-MontgomeryCXRSet.zip",
                    url="https://openi.nlm.nih.gov/imgs/collections/NLM-MontgomeryCXRSet.zip",
                    # Pinned by torch-em (constantinpape/torch-em, torch_em/data/datasets/medical/
                    # montgomery.py, CHECKSUM, verified there with hashlib.sha256); not measured
                    # here. If NLM changed the archive, download reports the measured hash.
                    sha256="54601e952315d8f67383e9202a6e145997ade429f54f7e0af44b4e158714f424",
                ),
            ),
            instructions=(
                "Public: `medcl data download montgomery` fetches NLM-MontgomeryCXRSet.zip (about"
                " 600 MB, sha256 checked). A copy you downloaded yourself is prepared with"
                " `medcl data prepare montgomery --source DIR`, DIR holding"
                " MontgomerySet/CXR_png/MCUCXR_XXXX_Y.png and"
                " MontgomerySet/ManualMask/{leftMask,rightMask}/MCUCXR_XXXX_Y.png."
            ),
            labels="lungs (right, left)",
            scan=xray.scan_montgomery,
            prepare=xray.prepare_montgomery,
        ),
        DatasetEntry(
            name="jsrt",
            title="JSRT chest X-rays: 247 PA images (2048 px, 12-bit) with SCR lung masks",
            modality="xray",
            access="registration",
            licence="JSRT database terms (registration) for the images; SCR database terms for"
            " the masks",
            citation="Shiraishi J et al. Development of a digital image database for chest"
            " radiographs with and without a lung nodule. AJR 2000;174(1):71-74. van Ginneken B,"
            " Stegmann MB, Loog M. Segmentation of anatomical structures in chest radiographs"
            " using supervised methods: a comparative study on a public database. Med Image Anal"
            " 2006;10(1):19-40.",
            homepage="http://db.jsrt.or.jp/eng.php",
            files=(),
            instructions=(
                "Registration: request the 247 JSRT images (All247images/*.IMG) at"
                " http://db.jsrt.or.jp/eng.php and the SCR lung masks at"
                " https://www.isi.uu.nl/Research/Databases/SCR/ . Put both in one folder DIR:"
                " DIR/All247images/JPCLN001.IMG ... and DIR/scratch/fold1/masks/left lung/"
                "JPCLN001.gif, .../right lung/ (any fold folders; one mask per lung and image)."
                " Then `medcl data check jsrt --source DIR` and"
                " `medcl data prepare jsrt --source DIR`."
            ),
            labels="lungs (right, left)",
            scan=xray.scan_jsrt,
            prepare=xray.prepare_jsrt,
        ),
        DatasetEntry(
            name="shenzhen",
            title="Shenzhen chest X-rays: 662 frontal images, lung masks for 566 (later release)",
            modality="xray",
            access="registration",
            licence=_NLM_TERMS + "; masks: CC BY-NC-SA 4.0 (per the mask authors)",
            citation=_JAEGER_2014
            + " Masks: Stirenko S et al. Chest X-ray analysis of tuberculosis by deep learning"
            " with segmentation and augmentation. IEEE ELNANO 2018 (arXiv:1803.01199).",
            homepage="https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets",
            files=(),
            instructions=(
                "Images are public (https://openi.nlm.nih.gov/imgs/collections/"
                "ChinaSet_AllFiles.zip, about 3.8 GB, no pinned checksum yet); the lung masks"
                " need a Kaggle account (https://www.kaggle.com/datasets/yoctoman/shcxr-lung-mask)."
                " Unpack both into one folder DIR: DIR/ChinaSet_AllFiles/CXR_png/"
                "CHNCXR_XXXX_Y.png and DIR/mask/CHNCXR_XXXX_Y_mask.png (any folder below DIR)."
                " Both lungs are in one mask; they are split by connected components (a mask in"
                " one piece that cannot be split into two lungs skips its image, listed in the"
                " prepared info, skipped_images). Then `medcl data prepare shenzhen --source DIR`."
            ),
            labels="lungs (right, left)",
            scan=xray.scan_shenzhen,
            prepare=xray.prepare_shenzhen,
        ),
        DatasetEntry(
            name="nih-cxr14",
            title="NIH ChestX-ray14: 112,120 images of 30,805 patients with follow-ups, no masks",
            modality="xray",
            access="public",
            licence="NIH Clinical Center: no registration; cite the paper and acknowledge the"
            " NIH Clinical Center",
            citation="Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8:"
            " hospital-scale chest X-ray database and benchmarks on weakly-supervised"
            " classification and localization of common thorax diseases. CVPR 2017.",
            homepage="https://nihcc.app.box.com/v/ChestXray-NIHCC",
            files=(),
            instructions=(
                "Manual download (Box, 42 GB in 12 archives; no registration) from"
                " https://nihcc.app.box.com/v/ChestXray-NIHCC : Data_Entry_2017.csv and"
                " images_001.tar.gz ... images_012.tar.gz unpacked next to it, so that DIR holds"
                " Data_Entry_2017.csv and images*/ folders with the PNGs. Temporal pretraining"
                " pool: time = Follow-up #. " + _POOL_OPTIONS
            ),
            labels="none (pretraining pool)",
            scan=pools.scan_nih_cxr14,
            prepare=pools.prepare_nih_cxr14,
        ),
        DatasetEntry(
            name="chexpert",
            title="CheXpert: 224,316 images of 65,240 patients over several studies, no masks",
            modality="xray",
            access="registration",
            licence="Stanford CheXpert Dataset Research Use Agreement (registration)",
            citation="Irvin J, Rajpurkar P, et al. CheXpert: a large chest radiograph dataset"
            " with uncertainty labels and expert comparison. AAAI 2019.",
            homepage="https://stanfordmlgroup.github.io/competitions/chexpert/",
            files=(),
            instructions=(
                "Registration at the homepage; download CheXpert-v1.0-small (or the full"
                " CheXpert-v1.0) and unpack it into DIR, so that DIR/CheXpert-v1.0-small/"
                "train.csv and DIR/CheXpert-v1.0-small/train/patient00001/study1/"
                "view1_frontal.jpg exist. Frontal images only; time = study number - 1. "
                + _POOL_OPTIONS
            ),
            labels="none (pretraining pool)",
            scan=pools.scan_chexpert,
            prepare=pools.prepare_chexpert,
        ),
        DatasetEntry(
            name="mimic-cxr",
            title="MIMIC-CXR-JPG: 377,110 images of 65,379 patients, studies over years, no masks",
            modality="xray",
            access="registration",
            licence="PhysioNet Credentialed Health Data License (credentialed access, data use"
            " agreement, training)",
            citation="Johnson AEW, Pollard TJ, Greenbaum NR, et al. MIMIC-CXR-JPG, a large"
            " publicly available database of labeled chest radiographs. arXiv:1901.07042, 2019;"
            " and PhysioNet (Goldberger et al. 2000).",
            homepage="https://physionet.org/content/mimic-cxr-jpg/",
            files=(),
            instructions=(
                "Credentialed PhysioNet access: download MIMIC-CXR-JPG into DIR so that DIR holds"
                " mimic-cxr-2.0.0-metadata.csv.gz and files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg"
                " (a subset of files/ is fine with -o allow_missing=true). time = rank of the"
                " study by StudyDate and StudyTime within the subject. Image-report pairs for"
                " chapter 05 (LRCLR): the entry mimic-cxr-reports. " + _POOL_OPTIONS
            ),
            labels="none (pretraining pool)",
            scan=pools.scan_mimic_cxr,
            prepare=pools.prepare_mimic_cxr,
        ),
        DatasetEntry(
            name="iu-xray",
            title="IU X-ray (OpenI): 3,955 chest X-ray reports with 7,470 images (frontal kept)",
            modality="xray",
            access="public",
            licence="CC BY-NC-ND 4.0 as commonly stated (e.g. MONAI's Open-I tutorial README);"
            " check the OpenI FAQ: non-commercial, no shared derivatives, attribute, cite",
            citation="Demner-Fushman D, Kohli MD, Rosenman MB, et al. Preparing a collection of"
            " radiology examinations for distribution and retrieval. J Am Med Inform Assoc"
            " 2016;23(2):304-310.",
            homepage="https://openi.nlm.nih.gov/faq",
            files=(
                # No sha256 is published by OpenI and none was found pinned by a reliable third
                # party: unpinned, so `download` refuses it unless --allow-unpinned, which logs
                # the measured sha256 to pin here (medcl_lite.data.download.fetch).
                RemoteFile(
                    name="NLMCXR_png.tgz",
                    url="https://openi.nlm.nih.gov/imgs/collections/NLMCXR_png.tgz",
                    sha256=None,
                ),
                RemoteFile(
                    name="NLMCXR_reports.tgz",
                    url="https://openi.nlm.nih.gov/imgs/collections/NLMCXR_reports.tgz",
                    sha256=None,
                ),
            ),
            instructions=(
                "Public: `medcl data download iu-xray --allow-unpinned` fetches NLMCXR_png.tgz"
                " (PNG images, over 1 GB) and NLMCXR_reports.tgz (XML reports) from OpenI; no"
                " sha256 is published, so the measured hashes are logged for you to check and"
                " pin. A copy you downloaded yourself: unpack both into DIR (any depth:"
                " DIR/.../ecgen-radiology/N.xml and DIR/.../CXR1_1_IM-0001-3001.png), then"
                " `medcl data check iu-xray --source DIR` and"
                " `medcl data prepare iu-xray --source DIR`. report = FINDINGS + IMPRESSION;"
                " patient_id = the report id (one study per patient). The views are not stated,"
                " so the frontal image is the most left-right symmetric image of each report (a"
                " heuristic: a report with one lateral image keeps it). Options: views=frontal"
                " or all, max_reports=null."
            ),
            labels="none (no masks); report text; bool opacity, nodule, cardiomegaly, effusion"
            " are " + reports.WEAK_LABELS,
            scan=reports.scan_iu_xray,
            prepare=reports.prepare_iu_xray,
        ),
        DatasetEntry(
            name="mimic-cxr-reports",
            title="MIMIC-CXR-JPG with reports: frontal image + FINDINGS/IMPRESSION per study",
            modality="xray",
            access="registration",
            licence="PhysioNet Credentialed Health Data License (credentialed access, data use"
            " agreement, training)",
            citation="Johnson AEW, Pollard TJ, Berkowitz SJ, et al. MIMIC-CXR, a de-identified"
            " publicly available database of chest radiographs with free-text reports. Sci Data"
            " 2019;6:317. Johnson AEW et al. MIMIC-CXR-JPG, arXiv:1901.07042, 2019.",
            homepage="https://physionet.org/content/mimic-cxr/",
            files=(),
            instructions=(
                "Credentialed PhysioNet access: MIMIC-CXR-JPG as for mimic-cxr (DIR holds"
                " mimic-cxr-2.0.0-metadata.csv.gz and files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg) plus"
                " the reports of MIMIC-CXR (mimic-cxr-reports.zip from"
                " https://physionet.org/content/mimic-cxr/): leave the zip in DIR or unpack it"
                " there (files/pXX/pSUBJECT/sSTUDY.txt). Optional:"
                " mimic-cxr-2.0.0-chexpert.csv.gz in DIR fills the finding columns (CheXpert 1"
                " -> True; 0, -1, blank -> False). One image per study (PA, else AP); report ="
                " FINDINGS + IMPRESSION (studies with neither skipped); time = study rank."
                " Options: views=[PA, AP], max_studies=1000, labels=auto (chexpert when the"
                " table is there, else keywords), allow_missing=false."
            ),
            labels="none (no masks); report text; bool opacity (Lung Opacity or Consolidation),"
            " nodule (Lung Lesion), cardiomegaly, effusion (Pleural Effusion) from CheXpert"
            " labels, else " + reports.WEAK_LABELS,
            scan=reports.scan_mimic_cxr_reports,
            prepare=reports.prepare_mimic_cxr_reports,
        ),
        DatasetEntry(
            name="acdc",
            title="ACDC cine MRI: 100 + 50 patients, LV/MYO/RV masks at ED and ES, all cine frames",
            modality="mri",
            access="public",
            licence="CC BY-NC-SA 4.0 (per the CREATIS Human Heart Project portal):"
            " non-commercial, share alike; cite Bernard et al. 2018",
            citation="Bernard O, Lalande A, Zotti C, et al. Deep learning techniques for automatic"
            " MRI cardiac multi-structures segmentation and diagnosis: is the problem solved?"
            " IEEE TMI 2018;37(11):2514-2525.",
            homepage="https://humanheart-project.creatis.insa-lyon.fr/database/",
            files=(
                RemoteFile(
                    name="ACDC.zip",
                    url="https://humanheart-project.creatis.insa-lyon.fr/database/api/v1/collection/"
                    "637218c173e9f0047faa00fb/download",
                    # Pinned by torch-em (constantinpape/torch-em, torch_em/data/datasets/medical/
                    # acdc.py, CHECKSUM); not measured here (no access from this machine). If the
                    # portal changed the archive, download reports the measured hash.
                    sha256="2787e08b0d3525cbac710fc3bdf69ee7c5fd7446472e49db8bc78548802f6b5e",
                ),
            ),
            instructions=(
                "Public: `medcl data download acdc --size 352` fetches ACDC.zip (about 2 GB,"
                " sha256 checked) from the CREATIS Human Heart Project portal and prepares the"
                " labelled ED/ES volumes; the unlabelled cine pretraining pool is then"
                " `medcl data prepare acdc --source $MEDCL_DATA/raw/acdc -o frames=all --size 352"
                " --out $MEDCL_DATA/prepared/acdc-cine-352`. A copy you downloaded yourself: unpack"
                " it into DIR so that"
                " DIR/.../training/patient001/ (and testing/patient101/) hold Info.cfg (ED, ES),"
                " patient001_frameYY.nii.gz + patient001_frameYY_gt.nii.gz at ED and ES, and"
                " patient001_4d.nii.gz (hidden folders and __MACOSX debris are skipped). Then"
                " `medcl data check acdc --source DIR` and"
                " `medcl data prepare acdc --source DIR`. Options: frames=labelled (ED+ES with"
                " masks) or all (every cine frame, unlabelled, for pretraining), spacing_mm=1.25"
                " (in-plane resampling, then centre crop/pad), max_patients=null."
            ),
            labels="background, lv, myocardium, rv (as the cardiac phantom)",
            scan=volumes.scan_acdc,
            prepare=volumes.prepare_acdc,
        ),
        DatasetEntry(
            name="chd",
            title="ImageCHD cardiac CT: congenital heart disease, 7 structures",
            modality="ct",
            access="registration",
            licence="ImageCHD terms (Kaggle dataset page)",
            citation="Xu X, Wang T, Shi Y, et al. ImageCHD: a 3D computed tomography image dataset"
            " for classification of congenital heart disease. MICCAI 2020.",
            homepage="https://www.kaggle.com/search?q=imagechd",
            files=(),
            instructions=(
                "Registration: Kaggle account, dataset 'imagechd'. Unpack into DIR so that the CT"
                " volumes ct_XXXX_image.nii.gz and their ct_XXXX_label.nii.gz lie in one folder"
                " (or the labels in another folder; any depth). Labels 1 LV, 2 RV, 3 LA, 4 RA,"
                " 5 myocardium, 6 aorta, 7 pulmonary artery become the classes of mmwhs (same"
                " order, for CHD -> MM-WHS transfer); values above 7 (other structures) become"
                " background, as in PCL's preprocessing, and are listed with their voxel counts"
                " in the prepared info (set_to_background). Then"
                " `medcl data check chd --source DIR` and `medcl data prepare chd --source DIR`."
                " Option: spacing_mm=null (else in-plane resampling, then centre crop/pad)."
            ),
            labels="background, lv, myocardium, rv, la, ra, aorta, pulmonary_artery (as mmwhs);"
            " stored values above 7 become background",
            scan=volumes.scan_chd,
            prepare=volumes.prepare_chd,
        ),
        DatasetEntry(
            name="mmwhs",
            title="MM-WHS CT: 20 labelled cardiac CT volumes, 7 whole-heart structures",
            modality="ct",
            access="registration",
            licence="MM-WHS challenge terms (registration at the homepage)",
            citation="Zhuang X, Shen J. Multi-scale patch and multi-modality atlases for whole"
            " heart segmentation of MRI. Med Image Anal 2016;31:77-87. Zhuang X, et al."
            " Evaluation of algorithms for multi-modality whole heart segmentation. Med Image"
            " Anal 2019;58:101537.",
            homepage="https://zmiclab.github.io/zxh/0/mmwhs/",
            files=(),
            instructions=(
                "Registration at the homepage. Unpack the release into DIR so that"
                " ct_train_XXXX_image.nii.gz and ct_train_XXXX_label.nii.gz lie in one folder (or"
                " in image/ and label/ folders; any depth). Only the CT training set is prepared:"
                " mr_train_*, ct_test_* and mr_test_* volumes are skipped (counted by check and"
                " in the prepared info, skipped_volumes). Labels 500 LV, 205 myocardium, 600 RV,"
                " 420 LA, 550 RA, 820 aorta, 850 pulmonary artery become classes 1..7. Then"
                " `medcl data check mmwhs --source DIR` and"
                " `medcl data prepare mmwhs --source DIR`."
            ),
            labels="background, lv, myocardium, rv, la, ra, aorta, pulmonary_artery",
            scan=volumes.scan_mmwhs,
            prepare=volumes.prepare_mmwhs,
        ),
        DatasetEntry(
            name="hvsmr",
            title="HVSMR 2016: 10 labelled cardiovascular MR volumes (congenital heart disease)",
            modality="mri",
            access="registration",
            licence="HVSMR 2016 challenge terms (registration at the homepage)",
            citation="Pace DF, Dalca AV, Geva T, Powell AJ, Moghari MH, Golland P. Interactive"
            " whole-heart segmentation in congenital heart disease. MICCAI 2015.",
            homepage="http://segchd.csail.mit.edu/",
            files=(),
            instructions=(
                "Registration at the homepage. Unpack the training data into DIR: images"
                " training_{axial_full,axial_crop,sa_crop}_patN.nii.gz and labels"
                " training_..._patN-label.nii.gz, next to them or in another folder (e.g."
                " GroundTruth/; any depth). Every patient comes in the three views of the same"
                " anatomy, so one is prepared (option view=sa_crop, the default and PCL's, or"
                " axial_crop, axial_full; null: every NAME.nii.gz + NAME-label.nii.gz pair);"
                " testing_* volumes (no public labels) are skipped. Labels 1 myocardium, 2 blood"
                " pool (any other value is an error); intensity: per-volume z-score as for ACDC."
                " Then `medcl data prepare hvsmr --source DIR`."
            ),
            labels="background, myocardium, blood_pool",
            scan=volumes.scan_hvsmr,
            prepare=volumes.prepare_hvsmr,
        ),
        DatasetEntry(
            name="btcv",
            title="BTCV (Synapse multi-atlas abdomen): 30 labelled abdominal CT, 13 organs",
            modality="ct",
            access="registration",
            licence="Synapse terms of use of the challenge data (Synapse account; accept the"
            " conditions on the project page)",
            citation="Landman B, et al. MICCAI multi-atlas labeling beyond the cranial vault:"
            " workshop and challenge. Proc. MICCAI Multi-Atlas Labeling Beyond the Cranial Vault"
            " Workshop Challenge, 2015.",
            homepage="https://www.synapse.org/#!Synapse:syn3193805/wiki/89480",
            files=(),
            instructions=(
                "Registration: Synapse account, project 'Multi-Atlas Labeling Beyond the Cranial"
                " Vault' (syn3193805), Files > Abdomen > RawData.zip. Unpack it into DIR so that"
                " DIR/RawData/Training/img/img0001.nii.gz and"
                " DIR/RawData/Training/label/label0001.nii.gz exist (30 training CT; images and"
                " labels are paired by number, RawData/Testing/ has no labels and is skipped)."
                " Labels 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus,"
                " 6 liver, 7 stomach, 8 aorta, 9 IVC, 10 portal and splenic veins, 11 pancreas,"
                " 12 right adrenal, 13 left adrenal. Then `medcl data check btcv --source DIR` and"
                " `medcl data prepare btcv --source DIR`. Options: classes=phantom (liver,"
                " spleen, kidneys, stomach as the abdominal phantom; other organs background) or"
                " all (the 13 organs), spacing_mm=null (else in-plane resampling, then centre"
                " crop/pad), max_patients=null."
            ),
            labels="background, liver, spleen, kidney_right, kidney_left, stomach (as the"
            " abdominal phantom); classes=all: the 13 BTCV organs",
            scan=abdomen.scan_btcv,
            prepare=abdomen.prepare_btcv,
        ),
        DatasetEntry(
            name="amos",
            title="AMOS 2022: abdominal CT + MRI, 15 organs; 300 labelled CT prepared",
            modality="ct",
            access="public",
            licence="CC BY 4.0 (Zenodo record; the archive's dataset.json says CC-BY-SA 4.0):"
            " cite the AMOS paper",
            citation="Ji Y, Bai H, Yang J, et al. AMOS: a large-scale abdominal multi-organ"
            " benchmark for versatile medical image segmentation. NeurIPS 2022 Datasets and"
            " Benchmarks (arXiv:2206.08023).",
            homepage="https://zenodo.org/records/7155725",
            files=(
                RemoteFile(
                    name="amos22.zip",
                    url="https://zenodo.org/records/7155725/files/amos22.zip",
                    # Pinned by torch-em (constantinpape/torch-em, torch_em/data/datasets/medical/
                    # amos.py, CHECKSUM); not measured here. Zenodo publishes only an md5
                    # (67717b2a483ac0744c89c3016b7aaef7, as quoted by users' download scripts).
                    sha256="d2fbf2c31abba9824d183f05741ce187b17905b8cca64d1078eabf1ba96775c2",
                ),
            ),
            instructions=(
                "Public: `medcl data download amos` fetches amos22.zip (about 24 GB, sha256"
                " checked) from Zenodo and prepares the labelled CT cases (training and"
                " validation; MRI cases amos_0501 and above and the unlabelled imagesTs are"
                " skipped). A copy you downloaded yourself: unpack it into DIR so that"
                " DIR/amos22/imagesTr/amos_0001.nii.gz and DIR/amos22/labelsTr/amos_0001.nii.gz"
                " (and imagesVa/, labelsVa/) exist, then `medcl data check amos --source DIR`"
                " and `medcl data prepare amos --source DIR`. Labels 1 spleen, 2 right kidney,"
                " 3 left kidney, 4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta,"
                " 9 postcava (IVC), 10 pancreas, 11 right adrenal, 12 left adrenal, 13 duodenum,"
                " 14 bladder, 15 prostate/uterus. Options: classes=phantom (liver, spleen,"
                " kidneys, stomach as the abdominal phantom; other organs background) or all"
                " (the 15 organs), spacing_mm=null, max_patients=null (all 300 CT cases at"
                " 256 px need several GB of memory)."
            ),
            labels="background, liver, spleen, kidney_right, kidney_left, stomach (as the"
            " abdominal phantom); classes=all: the 15 AMOS organs",
            scan=abdomen.scan_amos,
            prepare=abdomen.prepare_amos,
        ),
        DatasetEntry(
            name="folder",
            title="Your own data: a Decathlon / nnU-Net folder of volumes, or 2-D images + masks",
            modality="any",
            access="local",
            licence="the terms of your data",
            citation="cite where your data comes from",
            homepage="medcl_lite.data.catalog.folder (README: 'Your own data')",
            files=(),
            instructions=(
                "Volumes (Medical Segmentation Decathlon or nnU-Net raw layout): DIR/dataset.json"
                " ('labels', 'channel_names' or 'modality'), DIR/imagesTr/CASE_0000.nii.gz (or"
                " CASE.nii.gz), DIR/labelsTr/CASE.nii.gz, optional DIR/imagesTs/ (unlabelled)."
                " 2-D: DIR/images/NAME.png|.jpg|.dcm and DIR/masks/NAME.png (class indices; 0/255"
                " for one class); images without a mask are unlabelled. Optional DIR/meta.csv"
                " with columns case, patient_id, time, site (default: each case its own patient)."
                " `medcl data check folder --source DIR`, then `medcl data prepare folder"
                " --source DIR --out OUT [--classes background,liver]`: the labelled set goes to"
                " OUT, every image (unlabelled too) to OUT-pool for pretraining. Options: classes,"
                " channel=0 (nnU-Net channel), spacing_mm=null, modality=ct|mri (default from"
                " dataset.json), name."
            ),
            labels="the classes of dataset.json or --classes (2-D default: label_1 ...)",
            scan=folder.scan_folder,
            prepare=folder.prepare_folder,
        ),
    )
}


def get_entry(name: str) -> DatasetEntry:
    """The catalog entry ``name`` (case and ``_``/``-`` insensitive); a clear error otherwise."""
    key = str(name).strip().lower().replace("_", "-")
    if key in CATALOG:
        return CATALOG[key]
    if key.startswith("phantom"):
        raise ValueError(
            f"{name!r} is built in, not a catalog dataset: write it with"
            " `medcl data phantoms --out DIR` (medcl_lite.data.phantoms.write_phantoms)"
        )
    close = difflib.get_close_matches(key, CATALOG, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown dataset {name!r}{hint}; known: {', '.join(CATALOG)}")


def list_datasets() -> list[dict]:
    """One row per dataset for ``medcl data list``: name, title, access, labels, how to get it."""
    from medcl_lite.data.phantoms import PHANTOM_KINDS

    rows = [
        {
            "name": f"phantoms ({kind})",
            "title": doc,
            "access": "built-in",
            "labels": "yes",
            "get": f"medcl data phantoms --kind {kind} --out DIR",
        }
        for kind, doc in PHANTOM_KINDS.items()
        if kind != "all"
    ]
    for entry in CATALOG.values():
        how = (
            f"medcl data download {entry.name}"
            if entry.files
            else f"medcl data check {entry.name}; medcl data prepare {entry.name} --source DIR"
        )
        if entry.access == "local":
            how = "medcl data check folder --source DIR; medcl data prepare folder --source DIR"
        rows.append(
            {
                "name": entry.name,
                "title": entry.title,
                "access": entry.access,
                "labels": entry.labels,
                "get": how,
            }
        )
    return rows


def describe(name: str) -> str:
    """Where to get dataset ``name``, its terms and the folder layout :func:`check` expects."""
    entry = get_entry(name)
    return "\n".join(
        [
            f"{entry.name}: {entry.title}",
            f"  access:   {entry.access}",
            f"  homepage: {entry.homepage}",
            f"  licence:  {entry.licence}",
            f"  cite:     {entry.citation}",
            f"  labels:   {entry.labels}",
            f"  how:      {entry.instructions}",
        ]
    )


def check(name: str, source: str | Path | None = None) -> str:
    """Instructions for ``name``; with ``source``, check that folder's layout.

    Returns a text saying how to get the data (no ``source``) or that ``source`` is ready to
    prepare, with counts.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: unknown dataset, or ``source`` lacks files (all listed, up to 20).
    """
    entry = get_entry(name)
    if source is None:
        return describe(name)
    source = Path(source).expanduser()
    scan = entry.scan(source)
    scan.raise_problems(entry.name, source)
    lines = [f"{entry.name}: {source} is ready to prepare"]
    if scan.table is not None:
        _, summary = pools.select_temporal(scan.table, entry.name, allow_missing=True)
        lines.append(
            f"  with the default options: {summary['images']} images of"
            f" {summary['patients']} patients (views {summary['views']}, at least"
            f" {summary['min_times']} time points, at most {summary['max_patients']} patients);"
            f" {summary['listed_images_missing']} listed images of these views are missing"
        )
    else:
        unit = {"mri": "volumes", "ct": "volumes", "xray": "images"}.get(entry.modality, "cases")
        lines.append(f"  {len(scan.items)} {unit} found")
    lines += [f"  note: {note}" for note in scan.notes]
    lines.append(f"  next: medcl data prepare {entry.name} --source {source}")
    return "\n".join(lines)


def prepare(
    name: str,
    source: str | Path,
    *,
    out: str | Path | None = None,
    size: int = 256,
    overwrite: bool = False,
    home: str | Path | None = None,
    progress: bool = True,
    **options,
) -> Path:
    """Prepare dataset ``name`` from the folder ``source`` into ``out`` and return ``out``.

    ``out`` defaults to ``data_home(home)/prepared/<name>-<size>`` (``folder``: the source
    folder's name). ``options`` go to the dataset's preparer (e.g. ``max_patients`` for the
    pools; see ``describe(name)``). A preparer that returns several sets writes each at ``out``
    plus its suffix (``folder``: ``OUT-pool``, the pretraining pool); all or none are kept.

    Raises:
        FileExistsError: ``out`` is already prepared and ``overwrite`` is False (checked first).
        ValueError: unknown dataset or option, layout problems, unreadable files.
    """
    entry = get_entry(name)
    _check_options(entry, options)
    source = Path(source).expanduser()
    stem = source.name if entry.access == "local" else entry.name
    out = Path(out) if out is not None else data_home(home) / "prepared" / f"{stem}-{size}"
    if is_complete(out) and not overwrite:
        raise FileExistsError(f"{out} already holds a prepared dataset; use overwrite=True")
    result = entry.prepare(source, size=size, progress=progress, **options)
    parts = result if isinstance(result, dict) else {"": result}
    targets = {suffix: out.with_name(out.name + suffix) for suffix in parts}
    for suffix, target in targets.items():
        if suffix and is_complete(target) and not overwrite:
            raise FileExistsError(f"{target} already holds a prepared dataset; use overwrite=True")
    written = []
    try:
        for suffix, data in parts.items():
            data.info.update(
                {
                    "dataset": entry.name,
                    "title": entry.title,
                    "source": entry.homepage if entry.access != "local" else str(source),
                    "licence": entry.licence,
                    "citation": entry.citation,
                    "options": dict(options),
                    "prepared_with": {s: t.name for s, t in targets.items() if s != suffix},
                }
            )
            made = not targets[suffix].exists()
            write_prepared(data, targets[suffix], overwrite=overwrite)
            written.append((targets[suffix], made))
    except BaseException:
        for target, made in written:  # all or none: a pool without its labelled set misleads
            if made:
                shutil.rmtree(target, ignore_errors=True)
        raise
    return out


def prepared_parts(out: str | Path) -> dict[str, Path]:
    """The folders :func:`prepare` wrote for ``out``: ``{"": out}`` plus its siblings, e.g.
    ``{"-pool": OUT-pool}`` (read from ``out``'s ``dataset.json``)."""
    import json

    out = Path(out)
    info = json.loads((out / "dataset.json").read_text(encoding="utf-8")).get("info", {})
    siblings = info.get("prepared_with") or {}
    return {"": out, **{suffix: out.with_name(name) for suffix, name in siblings.items()}}


def download(
    name: str,
    *,
    home: str | Path | None = None,
    size: int = 256,
    overwrite: bool = False,
    allow_unpinned: bool = False,
    progress: bool = True,
) -> Path:
    """Download public dataset ``name`` and prepare it; return the prepared folder.

    Files are fetched (sha256 checked) and extracted into ``home/raw/<name>/``, then prepared into
    ``home/prepared/<name>-<size>/``. A complete prepared folder is returned at once, without
    network access (unless ``overwrite``). If fetching fails, a raw folder made by this call is
    removed again, so nothing unverified is kept.

    Raises:
        ValueError: unknown dataset, or one behind a registration (the message says where to get
            it), or an unpinned file without ``allow_unpinned``.
        ChecksumError: a download differs from its pinned sha256 (nothing is kept).
    """
    entry = get_entry(name)
    if entry.access != "public" or not entry.files:
        why = "registration" if entry.access != "public" else "no automatic download"
        raise ValueError(
            f"{entry.name} cannot be downloaded automatically ({why}); get it as described and"
            f" run `medcl data prepare {entry.name} --source DIR`.\n" + describe(entry.name)
        )
    home = data_home(home)
    out = home / "prepared" / f"{entry.name}-{size}"
    if is_complete(out) and not overwrite:
        return out
    raw = home / "raw" / entry.name
    made_raw = not raw.exists()
    try:
        for file in entry.files:
            path = fetch(file, raw, progress=progress, allow_unpinned=allow_unpinned)
            if file.name.lower().endswith(_ARCHIVES):
                extract(path, raw / _archive_stem(file.name))
    except BaseException:
        if made_raw:
            shutil.rmtree(raw, ignore_errors=True)
        raise
    return prepare(entry.name, raw, out=out, size=size, overwrite=overwrite, progress=progress)


def _archive_stem(file_name: str) -> str:
    lower = file_name.lower()
    for suffix in sorted(_ARCHIVES, key=len, reverse=True):
        if lower.endswith(suffix):
            return file_name[: -len(suffix)]
    return file_name


def _check_options(entry: DatasetEntry, options: dict) -> None:
    known = [
        p
        for p in inspect.signature(entry.prepare).parameters
        if p not in ("source", "size", "progress")
    ]
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            accepted = ", ".join(known) if known else "none"
            raise ValueError(
                f"{entry.name}: unknown option {key!r}{hint}; options it accepts: {accepted}"
            )
