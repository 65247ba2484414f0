"""placeholder"""
def is_hydra(argv):
    return False
