"""Names the command line lists without importing TensorFlow (kept equal to `METHODS` by a test)."""

METHOD_NAMES = (
    "gradcam", "gradcam++", "hirescam", "gradcam-elementwise", "xgradcam", "layercam", "cam",
    "scorecam", "eigencam", "eigengradcam", "guided-gradcam", "guided-backprop",
    "ablationcam", "kpcacam", "fem", "finercam", "shapleycam",
    "sscam", "iscam", "smoothgradcam++", "fullgrad",
)
