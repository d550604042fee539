import sys

from keras_gradcam.cli import main

sys.exit(main())
