"""POST /api/v1/predict: multipart upload of one or more images."""
from __future__ import annotations

from flask import Response, current_app, request
from flask_restx import Namespace, Resource, inputs
from werkzeug.datastructures import FileStorage

from adapters.flask_app.api import schemas
from adapters.flask_app.api.errors import ApiError
from adapters.flask_app.auth import key_id
from adapters.flask_app.metrics import observe_response
from pneumo_core.inference import InputImage, PredictRequest

ns = Namespace("predict", path="/", description="Classify chest X-rays")
schemas.register(ns)

upload = ns.parser()
upload.add_argument("file", location="files", type=FileStorage, required=True,
                    help="One or more images (JPEG, PNG or DICOM); repeat the field for a batch.")
upload.add_argument("heatmap", location="form", type=inputs.boolean, default=False,
                    help="Also return a Grad-CAM overlay per image (slower).")
upload.add_argument("site", location="form", type=str, required=False,
                    help="Use this site's operating point (see /models 'sites'); or send the X-Pneumo-Site header.")


@ns.route("/predict")
class Predict(Resource):
    @ns.doc(security="apikey")
    @ns.expect(upload)
    @ns.response(200, "Prediction per image", schemas.predict_response)
    @ns.response(400, "Unreadable image or bad request", schemas.error)
    @ns.response(401, "Missing or wrong API key", schemas.error)
    @ns.response(403, "Refused by a plugin", schemas.error)
    @ns.response(413, "Upload or image too large", schemas.error)
    @ns.response(415, "Unsupported image type", schemas.error)
    @ns.response(422, "Out of distribution, with serve.ood_policy reject", schemas.error)
    def post(self):
        """Classify uploaded images: label, calibrated probability, threshold, warnings."""
        if not (request.content_type or "").startswith("multipart/form-data"):
            raise ApiError(415, "unsupported_media_type",
                           "send images as multipart/form-data with one or more 'file' fields")
        files = request.files.getlist("file")
        if not files:
            raise ApiError(400, "no_file", "no image: attach one or more files in the 'file' form field")
        settings = current_app.config["PNEUMO_SETTINGS"]
        if len(files) > settings.serve.max_batch:
            raise ApiError(400, "too_many_files", f"{len(files)} files: send at most {settings.serve.max_batch} per request")
        flag = str(request.form.get("heatmap", "false")).lower()
        if flag not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            raise ApiError(400, "bad_parameter", f"heatmap must be true or false, not {flag!r}")
        heatmap = flag in ("1", "true", "yes", "on")
        images = [InputImage(name=f.filename or f"upload-{i}", data=f.read()) for i, f in enumerate(files)]
        site = (request.form.get("site") or request.headers.get("X-Pneumo-Site") or "").strip() or None
        predictor = current_app.config["PNEUMO_PREDICTOR"]
        # a PneumoError (unusable image, refused by a plugin...) becomes its own status and code
        response = predictor.predict(PredictRequest(images=images, heatmap=heatmap, source="rest",
                                                    client=key_id(request), site=site))
        observe_response(response, current_app.config["PNEUMO_MONITOR"])
        # Serialised by pydantic in one call, not as a dict that flask-restx hands to json.dumps.
        return Response(response.model_dump_json(), mimetype="application/json")
