"""The CNNs of Dobbels et al. 2019 (Fig. 3) in Keras 3, backend-neutral (keras and keras.ops only).

Import this package only where Keras is needed: importing Keras loads its backend.
"""
