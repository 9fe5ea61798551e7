"""dropsweep: which dropout set-up really generalises best, and does it beat no dropout?"""

__version__ = "0.1.0"
