"""Builders for OCT files that have no real sample here, written with each format's own library or spec.

Not mocks of our readers: .vol and .e2e are built with eyepy's construct definitions of the Heidelberg formats,
Topcon and Bioptigen files with oct-converter's construct structs, DICOM with pydicom, .mat with scipy, RETOUCH
.mhd/.raw with itk.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np


def build_vol(path: Path, bscans: np.ndarray, *, patient_id: str = "ANON", dob: str = "1950-01-01T00:00:00",
              scale=(0.12, 0.0039, 0.0114), laterality: str = "OS", scan_pattern: int = 3) -> Path:
    """A Heidelberg .vol (HSF-OCT-103) from float32 reflectivity (n, H, W), built with eyepy's vol_format."""
    import construct as cs
    from eyepy.io.he.vol_reader import vol_format

    # eyepy's IntDate adapter yields a float for exam_time, which Int64ul cannot pack: write that field raw.
    fmt = cs.Struct(*[("exam_time" / cs.Int64ul) if sc.name == "exam_time" else sc for sc in vol_format.subcons])
    n, h, w = bscans.shape
    slo = np.zeros((16, 16), np.uint8)
    num_seg = 3
    data = dict(
        version="HSF-OCT-103", size_x=w, n_bscans=n, size_y=h, scale_x=scale[2], distance=scale[0],
        scale_y=scale[1], size_x_slo=16, size_y_slo=16, scale_x_slo=0.0112, scale_y_slo=0.0112,
        field_size_slo=30, scan_focus=0.0, scan_position=laterality, exam_time=130681499728792750,
        scan_pattern=scan_pattern, bscan_hdr_size=256 + num_seg * 4 * w, id="1234", reference_id="",
        pid=42, patient_id=patient_id, dob=dob, vid=7, visit_id="VISIT-XYZ",
        visit_date="2015-02-11T00:00:00", grid_type=0, grid_offset=0, grid_type1=0, grid_offset1=0,
        prog_id="", localizer=slo,
        bscans=[dict(bscan_hdr_size=256 + num_seg * 4 * w, start_x=0.0, start_y=i * scale[0], end_x=w * scale[2],
                     end_y=i * scale[0], num_seg=num_seg, quality=25.0, shift=0, iv_transformation=[0.0] * 6,
                     layer_segmentations=np.zeros((num_seg, w), np.float32), data=bscans[i].astype(np.float32))
                for i in range(n)],
    )
    path.write_bytes(fmt.build(data))
    return path


def _chunk(name: bytes, payload: bytes) -> bytes:
    return bytes([len(name)]) + name + struct.pack("<I", len(payload)) + payload


def build_topcon(path: Path, volume: np.ndarray, *, kind: str = "FDS", eye: int = 1, jpeg: bool = False,
                 patient=("PID-77", "Jane", "Doe"), dims_mm=(6.0, 6.0), z_res_um=2.6) -> Path:
    """A Topcon .fds/.fda: FOCT header + chunks (IMG_SCAN_03 / IMG_MOT_COMP_03 uint16 or IMG_JPEG, PARAM_SCAN_04,
    CAPTURE_INFO_02, PATIENT_INFO_02, HW_INFO_03), built with oct-converter's construct structs."""
    from oct_converter.readers.binary_structs import fda_binary, fds_binary

    bs = fds_binary if kind == "FDS" else fda_binary
    n, h, w = volume.shape
    out = b"FOCT" + kind.encode() + struct.pack("<II", 1, 0)
    if jpeg:
        from PIL import Image

        body = fda_binary.oct_header.build(dict(scan_mode=2, unknown1=0, unknown2=0, width=w, height=h,
                                                number_slices=n, unknown3=0))
        for page in volume:
            buf = io.BytesIO()
            Image.fromarray(page.astype(np.uint8)).save(buf, format="JPEG", quality=100)
            body += struct.pack("<i", buf.tell()) + buf.getvalue()
        out += _chunk(b"@IMG_JPEG", body)
    else:
        head = dict(scan_mode=2, width=w, height=h, bits_per_pixel=16, number_slices=n, format=0, size=n * h * w * 2)
        raw = volume.astype("<u2").transpose(2, 1, 0).reshape(-1, order="F").tobytes()
        name, st = (b"@IMG_SCAN_03", fds_binary.oct_header) if kind == "FDS" else (b"@IMG_MOT_COMP_03", bs.oct_header_2)
        out += _chunk(name, st.build(head) + raw)
    out += _chunk(b"@PARAM_SCAN_04", bs.param_scan_04_header.build(dict(
        fixation=0, mirror_pos=0, polar=0, x_dimension_mm=dims_mm[0], y_dimension_mm=dims_mm[1],
        z_resolution_um=z_res_um, comp_eff_2=0.0, comp_eff_3=0.0, base_pos=0, used_calib_data=0)))
    out += _chunk(b"@CAPTURE_INFO_02", bs.capture_info_02_header.build(dict(
        eye=eye, scan_mode=2, session_id=1, label="3D Macula", cap_date=[2020, 5, 6, 10, 11, 12])))
    out += _chunk(b"@HW_INFO_03", bs.hw_info_03_header.build(dict(
        model_name="Maestro2", serial_number="SN1", spect_sn="S", rom_ver="1", unknown="", eq_calib_year=2020,
        eq_calib_month=1, eq_calib_day=1, eq_calib_hour=0, eq_calib_minute=0, spect_calib_year=2020,
        spect_calib_month=1, spect_calib_day=1, spect_calib_hour=0, spect_calib_minute=0)))
    z = lambda k: [0] * k  # noqa: E731
    out += _chunk(b"@PATIENT_INFO_02", bs.patient_info_02_header.build(dict(
        patient_id=patient[0], first_name=patient[1], last_name=patient[2], mid_name="", sex=2,
        birth_date=[1961, 2, 3], occup_reg=[z(20), z(20)], r_date=z(3), record_id=z(16), lv_date=z(3),
        physician=[z(64), z(64)], zip_code=z(12), addr=[z(48), z(48)], phones=[z(16), z(16)], nx_date=z(6),
        multipurpose_field=[z(20), z(20), z(20)], descp=z(64), reserved=z(32))))
    path.write_bytes(out + b"\x00")
    return path


def build_bioptigen(path: Path, volume: np.ndarray, *, scan_mm=(2.0, 1.5, 3.0)) -> Path:
    """A Bioptigen .OCT (rect scan, 1 time point) from uint16 (n, depth, a_scans), with oct-converter's structs."""
    from oct_converter.readers.binary_structs import boct_binary as bb

    n, depth, width = volume.shape

    def key(k: str) -> dict:
        return dict(keylength=len(k), key=k)

    def i(k: str, v: int) -> dict:
        return dict(**key(k), dataLength=4, value=v)

    def f(k: str, v: float) -> dict:
        return dict(**key(k), dataLength=8, value=v)

    def s(k: str, v: str) -> dict:
        return dict(**key(k), dataLength=len(v), value=v)

    header = bb.bioptigen_oct_header_struct.build({None: 0, **dict(
        magicNumber=0x00000000, version=0, frameheader=dict(**key("FRAMEHEADER"), dataLength=0),
        framecount=i("FRAMECOUNT", n), linecount=i("LINECOUNT", width), linelength=i("LINELENGTH", depth),
        sampleformat=i("SAMPLEFORMAT", 2), description=s("DESCRIPTION", "test"), xmin=f("XMIN", 0.0),
        xmax=f("XMAX", 1.0), xcaption=s("XCAPTION", "x"), ymin=f("YMIN", 0.0), ymax=f("YMAX", 1.0),
        ycaption=s("YCAPTION", "y"), scantype=i("SCANTYPE", 1), scandepth=f("SCANDEPTH", scan_mm[1]),
        scanlength=f("SCANLENGTH", scan_mm[2]), azscanlength=f("AZSCANLENGTH", scan_mm[2]),
        elscanlength=f("ELSCANLENGTH", scan_mm[0]), objectdistance=f("OBJECTDISTANCE", 0.0),
        scanangle=f("SCANANGLE", 0.0), scans=i("SCANS", n), frames=i("FRAMES", 1), dopplerflag=i("DOPPLERFLAG", 0),
        config=dict(**key("CONFIG"), dataLength=4, value=b"\x00" * 4))})
    frames = b""
    for page in volume:
        fh = bb.oct_frame_header_struct.build(dict(
            framedata=dict(**key("FRAMEDATA"), dataLength=0),
            framedatetime=dict(**key("FRAMEDATETIME"), dataLength=16, value=dict(
                year=2019, month=3, dow=1, day=4, hour=5, minute=6, second=7, millisecond=0)),
            frametimestamp=f("FRAMETIMESTAMP", 0.0), framelines=i("FRAMELINES", width),
            keylength=len("FRAMESAMPLES"), key="FRAMESAMPLES", dataLength=width * depth * 2))
        assert isinstance(fh, bytes)
        frames += fh + page.T.astype("<u2").tobytes() + b"\x00" * 4
    path.write_bytes(header + frames)
    return path


def build_dicom(path: Path, volume: np.ndarray, *, name: str = "Doe^Jane", birth: str = "19610203",
                pixel_mm=(0.0039, 0.0114), between_mm: float = 0.12, laterality: str = "R") -> Path:
    """A multi-frame Ophthalmic Tomography (OPT) DICOM written by pydicom, with patient fields planted."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.4"  # Ophthalmic Tomography Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "OPT", "TestVendor", "Model-1"
    ds.PatientName, ds.PatientBirthDate, ds.PatientID = name, birth, "MRN-0042"
    ds.ReferringPhysicianName, ds.PatientComments = "Who^Dr", "free text about the patient"
    ds.AccessionNumber, ds.StudyID, ds.StudyDate = "ACC-9", "STUDY-3", "20200506"
    ds.ImageLaterality = laterality
    n, h, w = volume.shape
    ds.NumberOfFrames, ds.Rows, ds.Columns = n, h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = 8 if volume.dtype == np.uint8 else 16
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    measures = Dataset()
    measures.PixelSpacing = [pixel_mm[0], pixel_mm[1]]
    measures.SliceThickness = between_mm
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PixelData = volume.astype(np.uint8 if bits == 8 else "<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def build_heyex_xml(folder: Path, volume: np.ndarray, *, first="Jane", last="Doe", scale=(0.12, 0.0039, 0.0114),
                    laterality="R") -> Path:
    """A HEYEX XML export (XML + localizer + one TIFF per B-scan, ExamURL references), following the element
    layout of a real (stripped) Spectralis export and eyepy's XML reader paths."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "slo.tif", np.zeros((32, 32), np.uint8))
    images = [("LOCALIZER", "slo.tif", 32, 32, 0.0112, 0.0112, None)]
    for i, page in enumerate(volume):
        name = f"bscan_{i}.tif"
        tifffile.imwrite(folder / name, page)
        images.append(("OCT", name, page.shape[1], page.shape[0], scale[2], scale[1], 1.0 + i * scale[0]))
    parts = []
    for idx, (kind, name, w, h, sx, sy, y) in enumerate(images):
        coords = "" if y is None else (f"<Start><Coord><X>0.5</X><Y>{y}</Y></Coord></Start>"
                                       f"<End><Coord><X>6.0</X><Y>{y}</Y></Coord></End>")
        parts.append(f"<Image><ID>{idx}</ID><ImageNumber>{idx}</ImageNumber><ImageType><Type>{kind}</Type></ImageType>"
                     f"<OphthalmicAcquisitionContext><Width>{w}</Width><Height>{h}</Height><ScaleX>{sx}</ScaleX>"
                     f"<ScaleY>{sy}</ScaleY><Angle>30</Angle><Focus>0.0</Focus>{coords}</OphthalmicAcquisitionContext>"
                     f"<ImageData><ExamURL>C:\\HEYEX\\{name}</ExamURL></ImageData></Image>")
    xml = (f"<?xml version='1.0' encoding='utf-8'?><HEDX><BODY><SWVersion><Version>6.0</Version></SWVersion>"
           f"<Patient><ID>11</ID><PatientID>MRN-0042</PatientID><LastName>{last}</LastName>"
           f"<FirstNames>{first}</FirstNames><Birthdate><Date><Year>1961</Year><Month>2</Month><Day>3</Day></Date>"
           f"</Birthdate><Study><StudyDate><Date><Year>2020</Year><Month>5</Month><Day>6</Day></Date></StudyDate>"
           f"<ReferringPhysician>Dr Who</ReferringPhysician><Series><ID>5</ID><Laterality>{laterality}</Laterality>"
           f"<ExaminedStructure>Retina</ExaminedStructure><Type>Volume</Type><ScanPattern>3</ScanPattern>"
           f"<ReferenceSeries><ExamDate><Date><Year>2020</Year><Month>5</Month><Day>6</Day></Date></ExamDate>"
           f"</ReferenceSeries>{''.join(parts)}</Series></Study></Patient></BODY></HEDX>")
    (folder / "export.xml").write_text(xml, encoding="utf-8")
    return folder / "export.xml"


#: 1961-02-03 as an E2E birth date: Julian day number 2437334, stored as (JDN + 14558805) * 64 (uocte's reading).
E2E_BIRTHDATE_1961_02_03 = (2437334 + 14558805) * 64


def build_e2e(path: Path, codes: np.ndarray, *, firstname: str = "Jane", surname: str = "Doe",
              patient_id: str = "MRN-0042", birthdate: int = E2E_BIRTHDATE_1961_02_03, sex: str = "F",
              laterality: str = "OS", scale_y: float = 0.0039, start_deg=(-10.0, -2.0), end_x_deg: float = 10.0,
              step_deg: float = 0.5, scan_pattern: int = 3, order=None) -> Path:
    """A Heidelberg .e2e holding one raster volume, built with eyepy's own construct definitions (``e2e_format``).

    ``codes`` (n, H, W) uint16 are the B-scan pixels in Heidelberg's unsigned 16-bit float (6-bit exponent with
    bias 63, 10-bit mantissa), written through eyepy's ``Bscan`` adapter (its decoder table ``LUT`` gives the
    floats). Layout as eyepy's reader walks it: version + main header, one chunk (header + one folder header per data
    container), then the data containers. Patient level: Type9 patient data. Series level: Type11 laterality,
    Type9005-9008 strings, Type10005 exam time, the localizer (image type 33620481). Slice level (slice id 2*i; 2 for
    a single B-scan): Type10004 B-scan meta (size, scale_y in mm, start/end in degrees, index), the B-scan (image
    type 35652097), two Type10019 layers (eyepy needs at least one per slice). ``order`` writes the slices in another
    file order.
    """
    from eyepy.io.he import e2e_format as ef

    n, h, w = codes.shape
    pid, study, series = 11, 12, 13
    items = [((pid, -1, -1, -1, 0), ef.TypesEnum.patient,
              ef.Type9(firstname=firstname, surname=surname, birthdate=birthdate, sex=sex, patient_id=patient_id))]
    ser = (pid, study, series, -1, 0)
    lat = ef.LateralityEnum.OD if laterality == "OD" else ef.LateralityEnum.OS

    def strings(*texts: str) -> dict:
        return dict(n_strings=len(texts), string_size=128, text=list(texts))

    slo = np.zeros((32, 32), np.uint8)
    items += [
        (ser, ef.TypesEnum.laterality, ef.Type11(unknown=bytes(14), laterality=lat)),
        (ser, ef.TypesEnum.enface_modality, ef.Type9007(**strings("Infra-Red", "IR"))),
        (ser, ef.TypesEnum.oct_modality, ef.Type9008(**strings("OCT", "OCT"))),
        (ser, ef.TypesEnum.scanpattern, ef.Type9006(**strings("OCT ART Volume"))),
        (ser, ef.TypesEnum.examined_structure, ef.Type9005(**strings("Retina"))),
        (ser, ef.TypesEnum.examination_time, ef.Type10005(unknown=bytes(16), examination_time="2020-05-06T10:11:12")),
        (ser, ef.TypesEnum.image, ef.Type1073741824(size=slo.size, type=33620481, n_values=slo.size, height=32,
                                                     width=32, data=slo)),
    ]
    lut = ef.Bscan.LUT  # eyepy's decoder table; its encoder maps these exact float32 values back to the codes
    for i in (range(n) if order is None else order):
        y = start_deg[1] + i * step_deg
        slice_id = 2 if n == 1 else 2 * i  # eyepy: "Slice id for single B-scan Volumes is 2 and not 0"
        sl = (pid, study, series, slice_id, 0)
        meta = ef.Type10004(
            unknown0=0, size_y=h, size_x=w, start_x=start_deg[0], start_y=y, end_x=end_x_deg, end_y=y, zero1=0,
            unknown1=0.0, scale_y=scale_y, unknown2=0.0, zero2=0, unknown3=[0.0, 0.0], zero3=0, imgSizeWidth=w,
            n_bscans=n, aktImage=i, scan_pattern=scan_pattern, center_x=(start_deg[0] + end_x_deg) / 2, center_y=y,
            unknown4=0, acquisitionTime="2020-05-06T10:11:12", numAve=16, quality=0.8, unknown5=0.0,
            unknown6=bytes(12), art_mode=16, oct_controller_fw_raw=bytes(4), oct_camera_fw_raw=bytes(4),
            oct_camera_fpga_raw=bytes(4), unknown7=bytes(4), focus_candidate_raw=0.0, unknown8=bytes(12),
            quality_ui=30.0, rest=bytes(428 - 172))  # Type10004 is 428 bytes in real files
        items.append((sl, ef.TypesEnum.bscanmeta, meta))
        items.append(((pid, study, series, slice_id, 1), ef.TypesEnum.image, ef.Type1073741824(
            size=h * w * 2, type=35652097, n_values=h * w, height=h, width=w, data=lut[codes[i]])))
        for layer_id, row in ((0, 0.2 * h), (1, 0.8 * h)):  # ILM, BM
            items.append((sl, ef.TypesEnum.layer_annotation, ef.Type10019(
                unknown0=0, id=layer_id, unknown1=0, width=w, manual_edit_raw=0, unknown2=[],
                data=np.full(w, row, np.float32))))

    hdr_len, folder_len = ef.header_format.sizeof(), ef.folderheader_format.sizeof()
    version = ef.version_format.build(ef.Version(name="CMDb", version=100, unknown0=[0] * 10))
    chunk_pos = len(version) + hdr_len
    pos = chunk_pos + hdr_len + len(items) * folder_len
    folders, blobs = [], []
    for k, ((p, st, se, sl_id, ind), typ, item) in enumerate(items):
        if isinstance(item, ef.Type10019):  # its padding count is derived from the container size
            size = 20 + 4 * len(item.unknown2) + 4 * item.width
        else:
            size = len(getattr(ef, f"type{item.type_id}_format").build(item))
        ids = dict(patient_id=p, study_id=st, series_id=se, slice_id=sl_id, ind=ind, type=typ)
        folder_pos = chunk_pos + hdr_len + k * folder_len
        blob = ef.datacontainer_format.build(ef.DataContainer(
            header=ef.ContainerHeader(magic3="MDbData", unknown0=0, header_pos=folder_pos, pos=pos, size=size,
                                      unknown1=0, unknown2=0, unknown3=0, **ids), item=item))
        assert len(blob) == ef.containerheader_format.sizeof() + size
        folders.append(ef.FolderHeader(pos=folder_pos, start=pos, size=size, unknown0=0, unknown1=0, unknown3=0, **ids))
        blobs.append(blob)
        pos += len(blob)

    def header(current: int, prev: int) -> bytes:
        return ef.header_format.build(ef.Header(magic2="MDbMDir", version=100, unknown0=[0] * 10,
                                                num_entries=len(items), current=current, prev=prev, unknown1=0))

    body = version + header(0, chunk_pos) + header(chunk_pos, 0)
    body += b"".join(ef.folderheader_format.build(f) for f in folders) + b"".join(blobs)
    path.write_bytes(body)
    return path


def build_retouch(folder: Path, volume: np.ndarray, *, spacing_zyx=(0.047, 0.00195, 0.0117),
                  reference: np.ndarray | None = None) -> Path:
    """A RETOUCH volume folder: ``oct.mhd``/``oct.raw`` (and ``reference.mhd``/``.raw`` with label ids 0-3),
    written by itk as the challenge ships them: DimSize x y z = A-scans, depth, B-scans; ElementSpacing in mm."""
    import itk

    folder.mkdir(parents=True, exist_ok=True)
    image = itk.image_from_array(np.ascontiguousarray(volume))
    image.SetSpacing([float(s) for s in reversed(spacing_zyx)])
    itk.imwrite(image, str(folder / "oct.mhd"))
    if reference is not None:
        ref = itk.image_from_array(np.ascontiguousarray(reference.astype(np.uint8)))
        ref.SetSpacing([float(s) for s in reversed(spacing_zyx)])
        itk.imwrite(ref, str(folder / "reference.mhd"))
    return folder


def hung_duke_parse(path: str, farsiu: bool) -> None:
    """Stands in for ``io.duke_mat._parse_duke`` in its spawned parser process: a parse that never ends (as the .mat
    atheris found), so a test of the timeout does not depend on how fast a real parse is on a loaded machine."""
    import time

    time.sleep(600)
