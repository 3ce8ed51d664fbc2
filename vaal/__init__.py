"""The adversarial and loss-prediction baselines (docs/acquisitions/vaal.md): VAAL, TA-VAAL and learning loss.

Where things live:
  models.py        the VAE, the discriminator, the loss prediction module (ranker) and the task-model wrapper
                   that carries it; the image conversion to the VAE's [0, 1] S x S input
  train.py         the pure losses (VAE, margin ranking, RankNet), the VAE / discriminator training, the
                   ranking terms learning loss and TA-VAAL add to the task loss, and the pure selection functions
  acquisitions.py  the ``vaal``, ``tavaal`` and ``lloss`` acquisitions, their command-line options and the task
                   hooks that wrap the task model and bind those options into its training loss

References: Sinha, Ebrahimi and Darrell, "Variational Adversarial Active Learning" (ICCV 2019) and its official
code; Yoo and Kweon, "Learning Loss for Active Learning" (CVPR 2019); Kim et al., "Task-Aware Variational
Adversarial Active Learning" (CVPR 2021, ``papers/ta-vaal-paper.txt``) and its code.
"""
