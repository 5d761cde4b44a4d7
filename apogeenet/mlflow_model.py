"""The APOGEE Net pyfunc as an MLflow "model from code" (mlflow.models.set_model).

MLflow logs this file's source beside the weights (``artifacts/model.pt``); loading the
registered model runs this source, which imports the installed ``apogeenet`` package, and reads
the weights with ``torch.load(weights_only=True)``: nothing is unpickled, so a model file cannot
carry code (a CloudPickle'd PythonModel would).
"""

from mlflow.models import set_model

from apogeenet.pyfunc import ApogeeNetPyfunc

set_model(ApogeeNetPyfunc())
