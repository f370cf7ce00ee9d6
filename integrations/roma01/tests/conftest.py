import os
import sys

# The drop-in sits one directory up, as it would in roma-01's backend.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
