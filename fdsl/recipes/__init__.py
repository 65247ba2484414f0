"""Run wiring, one module per kind of run: each `run(args)` turns a command's parsed options into data, model,
method, optimiser and schedule, and hands them to the one epoch driver (fdsl.engine.fit).

    supervised      fdsl pretrain / fdsl finetune (timm models, classification)
    deepercluster   fdsl deepercluster (DeeperCluster, DeepCluster, RotNet)
    hpt_pretrain    fdsl hpt pretrain (MoCo v2, BYOL: fdsl.ssl.methods)
    hpt_probe       fdsl hpt linear / fdsl hpt finetune
    eval_linear     fdsl eval-linear (conv-layer linear probe, k-NN)
    eval_voc        fdsl eval-voc (Pascal VOC 2007 classification transfer)
    eval_pretrain   fdsl eval-pretrain (supervised training from unsupervised VGG16 weights)

The commands' parsers live in fdsl.cli, the loop and its parts in fdsl.engine, the methods in fdsl.ssl and
fdsl.eval; only fdsl.cli and these modules read an argparse Namespace.
"""
