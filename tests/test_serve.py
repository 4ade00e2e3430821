"""The JSON API and page of `cifar100 serve`, over HTTP to the real command on 127.0.0.1: real
model, real images, and every kind of bad upload answered with a 4xx that says what was wrong,
the same server process answering the next request."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image
from run_fixtures import run_cli, serve_process
from test_predict import png_with_header_only

from cifar100.data.images import decode_image, to_model_input
from cifar100.inference import load_model

LIMIT = 3 * 1024 * 1024  # small, so a too-large upload is cheap to make


@pytest.fixture(scope="module")
def model(smoke_run):
    return load_model(smoke_run)


@pytest.fixture(scope="module")
def client(smoke_run):
    with serve_process(smoke_run, "--max-upload-mb", str(LIMIT / 2**20)) as (base, _, _):
        with httpx.Client(base_url=base, timeout=60) as c:
            yield c


@pytest.fixture(scope="module")
def photo_jpeg(cifar10_small_folder) -> bytes:
    """A real photo as a user has it: large, not square, JPEG."""
    source = sorted((cifar10_small_folder / "test" / "horse").glob("*.jpg"))[0]
    big = Image.open(source).convert("RGB").resize((640, 400), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def model_input_of(response_json) -> np.ndarray:
    png = base64.b64decode(response_json["model_input_png"])
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.size == (32, 32) and img.mode == "RGB"
        return np.array(img)


def test_predict_returns_top5_and_the_exact_32x32_the_model_saw(client, model, photo_jpeg):
    response = client.post("/predict", files={"file": ("holiday.jpg", photo_jpeg, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == "JPEG" and body["original_size"] == [640, 400] and body["crop"] is True
    top = body["top_k"]
    assert len(top) == 5 and len({t["class"] for t in top}) == 5
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6

    # The PNG is the model's input, pixel for pixel, and the answer is the model's on it.
    seen = model_input_of(body)
    expected_input = to_model_input(decode_image(photo_jpeg), crop=True)
    assert np.array_equal(seen, expected_input)
    expected = model.probabilities(seen[None])[0]
    assert top[0]["class"] == model.classes[int(expected.argmax())]
    assert probs == pytest.approx(sorted(expected.tolist(), reverse=True)[:5], abs=1e-6)


def test_raw_body_upload_and_query_options(client, photo_jpeg):
    form = client.post("/predict", files={"file": ("x.jpg", photo_jpeg, "image/jpeg")}).json()
    raw = client.post("/predict", content=photo_jpeg, headers={"Content-Type": "application/octet-stream"})
    assert raw.status_code == 200 and raw.json() == form

    squashed = client.post("/predict?top_k=3&crop=false", content=photo_jpeg, headers={"Content-Type": "image/jpeg"})
    assert squashed.status_code == 200
    body = squashed.json()
    assert len(body["top_k"]) == 3 and body["crop"] is False
    assert np.array_equal(model_input_of(body), to_model_input(decode_image(photo_jpeg), crop=False))


def test_type_is_decided_by_content_not_by_name(client, photo_jpeg):
    # A PNG named .jpg and sent as image/gif is still a PNG.
    png = io.BytesIO()
    Image.open(io.BytesIO(photo_jpeg)).save(png, format="PNG")
    response = client.post("/predict", files={"file": ("photo.jpg", png.getvalue(), "image/gif")})
    assert response.status_code == 200 and response.json()["format"] == "PNG"


def test_uploads_bigger_than_spooling_size_stay_accepted(client):
    # Over Starlette's 1 MiB spool-to-disk size, under our limit: read fully in memory.
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    assert 1024 * 1024 < len(buffer.getvalue()) < LIMIT
    response = client.post("/predict", files={"file": ("noise.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200 and response.json()["original_size"] == [700, 700]


def _ico_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buffer, format="ICO")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, send, status, words",
    [
        ("text", lambda c, j: c.post("/predict", files={"file": ("a.jpg", b"hello, not an image", "image/jpeg")}), 400, "not an image"),
        ("empty", lambda c, j: c.post("/predict", files={"file": ("a.jpg", b"", "image/jpeg")}), 400, "empty"),
        ("truncated", lambda c, j: c.post("/predict", files={"file": ("a.jpg", j[: len(j) // 3], "image/jpeg")}), 400,
         "the upload cannot be used: the image is truncated"),
        ("bomb", lambda c, j: c.post("/predict", files={"file": ("a.png", png_with_header_only(60_000, 60_000), "image/png")}), 400,
         "the upload has too many pixels to decode safely: its header claims 3,600,000,000"),
        ("too large", lambda c, j: c.post("/predict", files={"file": ("a.jpg", j + b"\0" * LIMIT, "image/jpeg")}), 413, "larger than the limit"),
        ("too large raw", lambda c, j: c.post("/predict", content=b"\xff" * (LIMIT + 1), headers={"Content-Type": "image/jpeg"}), 413, "larger than the limit"),
        ("icon format", lambda c, j: c.post("/predict", files={"file": ("a.png", _ico_bytes(), "image/png")}), 415,
         "the upload is in ICO format, which is not accepted"),
        ("wrong content type", lambda c, j: c.post("/predict", content=j, headers={"Content-Type": "text/plain"}), 415, "text/plain"),
        ("no file field", lambda c, j: c.post("/predict", files={"photo": ("a.jpg", j, "image/jpeg")}), 422, '"file"'),
        ("bad top_k", lambda c, j: c.post("/predict?top_k=0", content=j, headers={"Content-Type": "image/jpeg"}), 422, "top_k"),
        ("broken multipart", lambda c, j: c.post("/predict", content=b"--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc",
                                                  headers={"Content-Type": "multipart/form-data; boundary=xyz"}), 400, "ends in the middle"),
    ],
)
def test_bad_uploads_get_a_clear_4xx_and_the_server_stays_up(client, photo_jpeg, name, send, status, words):
    response = send(client, photo_jpeg)
    assert response.status_code == status, (name, response.text)
    assert words in str(response.json()["detail"]), (name, response.text)
    assert client.get("/health").status_code == 200
    assert client.post("/predict", content=photo_jpeg, headers={"Content-Type": "image/jpeg"}).status_code == 200


def test_health_and_classes(client, model):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["num_classes"] == len(model.classes)
    assert health["max_upload_bytes"] == LIMIT
    assert client.get("/classes").json() == {"classes": model.classes}


def test_the_page_and_its_files_come_from_the_app_itself(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert 'src="/static/app.js"' in html and 'href="/static/style.css"' in html
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    assert 'href="/static/favicon.svg"' in html
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        response = client.get(asset)
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert "http://" not in response.text and "https://" not in response.text


def test_openapi_schema_documents_the_api(client):
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/health", "/classes"} <= set(schema["paths"])
    predict = schema["paths"]["/predict"]["post"]
    content = predict["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert "image/*" in content and "application/octet-stream" in content
    assert {"200", "400", "413", "415", "422"} <= set(predict["responses"])
    assert {p["name"] for p in predict["parameters"]} == {"top_k", "crop"}


def test_a_model_trained_on_squashed_photos_squashes_by_default(synthetic_folder, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "--preset", "smoke", "--dataset", synthetic_folder, "--data-dir", tmp_path / "cache",
                     "--out", run, "--epochs", "1", "--no-evaluate", "--quiet", "--set", "center_crop=false")
    assert result.returncode == 0, result.stderr
    photo = io.BytesIO()
    Image.new("RGB", (96, 48), (200, 30, 30)).save(photo, format="PNG")
    with serve_process(run) as (base, _, _):
        page = httpx.get(f"{base}/", timeout=30).text
        answer = httpx.post(f"{base}/predict", files={"file": ("wide.png", photo.getvalue(), "image/png")}, timeout=60)
    assert '<input id="crop" type="checkbox">' in page  # the page's box starts unticked
    assert answer.status_code == 200 and answer.json()["crop"] is False
